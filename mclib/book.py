"""The book runner: papermill over every notebook in ``_toc.yml`` order, then ``jupyter-book build``.

Usage (``make book`` runs the first line)::

    python -m mclib.book build --preset quick            # execute every notebook, then build the HTML
    python -m mclib.book build --preset smoke --no-html  # execute only (what the tests do)
    python -m mclib.book build --only a1_real_paths      # re-execute one notebook, rebuild the HTML
    python -m mclib.book run notebooks/a1_real_paths.ipynb --preset quick   # one notebook, no HTML

Notebooks are stored without outputs. Executed copies go to ``_build/src/notebooks/``; the book is
built from ``_build/src`` (a staged copy of ``_config.yml``, ``_toc.yml``, ``book/`` and the executed
notebooks) into ``_build/html`` with ``execute_notebooks: off`` and ``-W -n --keep-going``, so
every warning fails the build and the git tree stays as clean as before. The first failing notebook
stops the run, naming the notebook and the cell; its executed copy is kept for reading.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch
import yaml

from mclib import claims, config

KERNEL = "mclib"


class NotebookFailed(RuntimeError):
    """A notebook raised during execution; the message names the notebook and the cell."""


def _root(root: str | os.PathLike | None) -> Path:
    path = Path(root) if root else (config.REPO_ROOT or Path.cwd())
    if not (path / "_toc.yml").exists():
        raise FileNotFoundError(f"no _toc.yml in {path}: run from the repository root or pass --root")
    return path


def toc_files(root: str | os.PathLike | None = None) -> list[str]:
    """Every ``file:`` entry of ``_toc.yml`` (the root first), in reading order, without suffix."""
    root = _root(root)
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    out = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                out.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(toc)
    return out


def notebooks(root: str | os.PathLike | None = None) -> list[Path]:
    """The notebooks named in ``_toc.yml``, in order (paths relative to the root)."""
    root = _root(root)
    found = []
    for entry in toc_files(root):
        nb = Path(entry).with_suffix(".ipynb")
        if (root / nb).exists():
            found.append(nb)
        elif not (root / Path(entry).with_suffix(".md")).exists():
            raise FileNotFoundError(f"_toc.yml names {entry!r} but neither {nb} nor {entry}.md exists")
    return found


def ensure_kernel() -> None:
    """Register the ``mclib`` Jupyter kernel for this Python if it is not registered yet."""
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL not in KernelSpecManager().find_kernel_specs():
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL,
                        "--display-name", "Python (mclib)"], check=True, capture_output=True)


def parameters(preset: str, device: str, seed: int, data_root: str | None, cache_dir: str | None) -> dict:
    """The papermill parameters every notebook takes (validated here, so a typo fails before any work)."""
    config.check_preset(preset)
    config.get_device(device)
    return {"preset": preset, "device": device, "seed": int(seed), "data_root": data_root,
            "cache_dir": str(cache_dir) if cache_dir else None}


def _source_cell(executed: Path, index: int) -> str:
    """Name the failing cell as it is numbered in the stored notebook (papermill inserts a cell)."""
    import nbformat

    # papermill numbers cells before it adds its red error-banner cells to the copy it saves
    cells = [c for c in nbformat.read(executed, as_version=4).cells
             if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]
    injected = sum("injected-parameters" in c.metadata.get("tags", []) for c in cells[:index])
    first = next((line for line in cells[index].source.splitlines() if line.strip()), "")
    return f"cell {index - injected + 1} (counting from 1, `{first[:60]}`)"


def execute(nb: Path, out: Path, params: dict, root: Path, progress: bool = True) -> float:
    """Execute one notebook with papermill; return seconds taken; raise :class:`NotebookFailed` on error."""
    import papermill as pm

    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        pm.execute_notebook(str(root / nb), str(out), parameters=params, kernel_name=KERNEL,
                            cwd=str((root / nb).parent), progress_bar=progress, log_output=False)
        _add_rerun_box(out, nb, params)
    except pm.PapermillExecutionError as err:
        raise NotebookFailed(f"{nb} failed at {_source_cell(out, err.cell_index)}: {err.ename}: {err.evalue}\n"
                             f"  the executed copy, with the traceback, is kept at {out}") from None
    return time.perf_counter() - start


def _stage(root: Path, src: Path) -> None:
    """Copy the book's sources (config, toc, prose pages) next to the executed notebooks, with MathJax."""
    src.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / name, src / name)
    shutil.copytree(root / "book", src / "book", dirs_exist_ok=True)
    stage_mathjax(src / "_static" / "mathjax")


def stage_mathjax(dest: Path) -> Path:
    """Copy a local MathJax 3 (``tex-mml-chtml.js`` and its woff fonts) to ``dest``.

    The files come from the ``django-static-mathjax`` wheel (MathJax 3.2.2 as plain static files, no
    Django needed), so the built book renders mathematics without any internet access.
    """
    import mathjax

    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (es5 / "tex-mml-chtml.js").exists():
        raise FileNotFoundError(f"MathJax not found at {es5}: reinstall the dependency django-static-mathjax")
    fonts = Path("output") / "chtml" / "fonts" / "woff-v2"
    (dest / fonts).mkdir(parents=True, exist_ok=True)
    shutil.copy2(es5 / "tex-mml-chtml.js", dest / "tex-mml-chtml.js")
    shutil.copytree(es5 / fonts, dest / fonts, dirs_exist_ok=True)
    return dest / "tex-mml-chtml.js"


def rerun_box(nb: Path, params: dict) -> str:
    """The markdown of the "rerun this page" box: the command that reruns this notebook from a fresh clone.

    The command uses the checkout's own interpreter (``.venv/bin/python``, made by ``make setup``), so it
    works without activating anything; options equal to their defaults are left out. The box carries the
    class ``mclib-rerun``, whose CSS wraps the command instead of scrolling it out of sight.
    """
    defaults = {"device": "auto", "seed": 0, "data_root": None, "cache_dir": None}
    opts = f"--preset {params['preset']}" + "".join(
        f" --{k.replace('_', '-')} {params[k]}" for k, v in defaults.items() if params.get(k, v) != v)
    cli = ".venv/bin/python -m mclib.book"
    return (":::{admonition} Rerun this page\n:class: tip mclib-rerun\n"
            "This page was executed with the parameters in the cell below. To rerun it from a fresh clone of "
            "the repository:\n\n"
            f"```bash\nmake setup   # once: creates .venv with mclib and its notebook kernel\n"
            f"{cli} run {nb.as_posix()} {opts}\n```\n\n"
            f"The executed copy is written to `_build/src/{nb.as_posix()}`; `{cli} build --only {nb.stem} {opts}` "
            "also rebuilds this page of the book. The launch button at the top of the page opens the notebook "
            "in Binder or Colab.\n"
            ":::")


def quiet_parameters(executed) -> None:
    """Show the parameters once: tag the notebook's own ``parameters`` cell ``remove-cell``.

    Papermill keeps the original cell (the defaults) and inserts its ``injected-parameters`` cell after it
    (the values this run used); the page shows only the latter. A notebook run without injected
    parameters keeps its own cell.
    """
    tags = [c.metadata.get("tags", []) for c in executed.cells]
    if any("injected-parameters" in t for t in tags):
        for cell, t in zip(executed.cells, tags):
            if "parameters" in t and "remove-cell" not in t:
                cell.metadata["tags"] = [*t, "remove-cell"]


def _add_rerun_box(out: Path, nb: Path, params: dict) -> None:
    """Post-process an executed copy: the rerun box after the first markdown cell, parameters shown once."""
    import nbformat

    executed = nbformat.read(out, as_version=4)
    cell = nbformat.v4.new_markdown_cell(rerun_box(nb, params))
    cell.metadata["tags"] = ["mclib-rerun-box"]
    first_md = next((i for i, c in enumerate(executed.cells) if c.cell_type == "markdown"), -1)
    executed.cells.insert(first_md + 1, cell)
    quiet_parameters(executed)
    nbformat.write(executed, out)


def build_html(root: Path, build: Path) -> Path:
    """``jupyter-book build`` of the staged sources, strict (``-W -n --keep-going``); returns the html folder."""
    if build.name != "_build":
        raise ValueError(f"the build folder must be named _build (jupyter-book writes <path-output>/_build), got {build}")
    src = build / "src"
    _stage(root, src)
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(src), "--path-output", str(build.parent),
           "-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, cwd=root)
    if proc.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed (exit {proc.returncode}); see the warnings above")
    return build / "html"


def _fmt(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def build(preset: str = "quick", device: str = "auto", seed: int = 0, data_root: str | None = None,
          cache_dir: str | None = None, only: list[str] | None = None, html: bool = True,
          root: str | os.PathLike | None = None, progress: bool = True) -> dict:
    """Execute the notebooks of ``_toc.yml`` (all, or those named in ``only``) and build the HTML book.

    Returns a dict with the executed notebooks, their run times, the claims summary and the html path.
    """
    root = _root(root)
    build_dir = Path(os.environ.get("MCLIB_BUILD_DIR") or root / "_build")
    os.environ["MCLIB_BUILD_DIR"] = str(build_dir)  # the kernels inherit it: claims land here
    params = parameters(preset, device, seed, data_root, cache_dir)
    ensure_kernel()
    todo = notebooks(root)
    if only:
        wanted = {Path(o).stem for o in only}
        unknown = wanted - {nb.stem for nb in todo}
        if unknown:
            raise ValueError(f"--only names notebooks not in _toc.yml: {sorted(unknown)}; known: {[nb.stem for nb in todo]}")
        # the report page summarises every claim, so it is rerun whenever anything is
        todo = [nb for nb in todo if nb.stem in wanted or nb.stem == "report"]
    else:
        for old in (build_dir / "claims").glob("*.json"):
            old.unlink()  # a full build reports only what this run measured
    claims_dir = claims.claims_dir()
    (claims_dir / "_meta.json").write_text(json.dumps({
        "preset": preset, "device": str(config.get_device(device)), "seed": seed,
        "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
        "date": date.today().isoformat()}, indent=2) + "\n")
    start, times = time.perf_counter(), {}
    for i, nb in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {nb}  (preset {preset}, elapsed {_fmt(time.perf_counter() - start)})", flush=True)
        times[str(nb)] = execute(nb, build_dir / "src" / nb, params, root, progress=progress)
        print(f"      done in {times[str(nb)]:.1f} s", flush=True)
    result = {"notebooks": times, "summary": claims.summary(), "seconds": time.perf_counter() - start}
    if html:
        result["html"] = str(build_html(root, build_dir) / "index.html")
    return result


def main(argv: list[str] | None = None) -> int:
    """The command line (``python -m mclib.book build|run ...``); returns the exit code (1 on any failure)."""
    parser = argparse.ArgumentParser(prog="python -m mclib.book", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("build", "run"):
        p = sub.add_parser(name)
        if name == "run":
            p.add_argument("notebook", help="path of one notebook, e.g. notebooks/a1_real_paths.ipynb")
            p.add_argument("--out", help="where to write the executed copy (default _build/src/<notebook>)")
        else:
            p.add_argument("--only", nargs="+", help="execute only these notebooks (stems), then build")
            p.add_argument("--no-html", action="store_true", help="execute the notebooks but skip jupyter-book")
        p.add_argument("--preset", default="quick", help=f"one of {', '.join(config.PRESET_NAMES)} (default quick)")
        p.add_argument("--device", default="auto", help=f"one of {', '.join(config.DEVICE_NAMES)} (default auto)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--data-root", default=None, help="folder holding torchvision datasets (paper preset)")
        p.add_argument("--cache-dir", default=None, help="model cache (default $MCLIB_CACHE or .cache/)")
        p.add_argument("--root", default=None, help="repository root (default: the checkout mclib runs from)")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            root = _root(args.root)
            nb = Path(args.notebook)
            nb = nb.resolve().relative_to(root.resolve()) if nb.is_absolute() else nb
            if not (root / nb).exists():
                raise FileNotFoundError(f"no notebook {nb} under {root}")
            params = parameters(args.preset, args.device, args.seed, args.data_root, args.cache_dir)
            ensure_kernel()
            build_dir = Path(os.environ.get("MCLIB_BUILD_DIR") or root / "_build")
            os.environ["MCLIB_BUILD_DIR"] = str(build_dir)
            out = Path(args.out) if args.out else build_dir / "src" / nb
            seconds = execute(nb, out, params, root)
            print(f"{nb} executed in {seconds:.1f} s -> {out}")
            return 0
        result = build(args.preset, args.device, args.seed, args.data_root, args.cache_dir, args.only,
                       html=not args.no_html, root=args.root)
    except (NotebookFailed, ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"\nmclib.book: {err}", file=sys.stderr)
        return 1
    s = result["summary"]
    print(f"\nExecuted {len(result['notebooks'])} notebooks in {_fmt(result['seconds'])} (preset {args.preset}).")
    print(f"Claims: {s['holding']} holding, {s['failing']} failing, {s['not run']} not run.")
    if "html" in result:
        print(f"The book is at {result['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
