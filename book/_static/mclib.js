/* The book's own behaviour (html_js_files in _config.yml): stacked table rows keep their column labels, and a
   figure opens full size on a click (or Enter), closing again on a click or Escape. */
document.addEventListener("DOMContentLoaded", () => {
  // at phone width the report's rows stack (mclib.css); each cell is labelled with its column's heading
  document.querySelectorAll(".cell_output table.table").forEach((table) => {
    const heads = Array.from(table.querySelectorAll("thead th")).map((th) => th.innerText.trim());
    table.querySelectorAll("tbody tr").forEach((tr) => {
      Array.from(tr.cells).forEach((td, i) => { if (heads[i]) td.dataset.label = heads[i]; });
    });
  });
  const close = () => document.querySelectorAll("figure.mclib-zoomed").forEach((f) => f.classList.remove("mclib-zoomed"));
  document.querySelectorAll("figure.mclib-figure img").forEach((img) => {
    img.setAttribute("tabindex", "0");
    img.setAttribute("role", "button");
    img.setAttribute("title", "open full size");
    const toggle = () => {
      const fig = img.closest("figure");
      const open = !fig.classList.contains("mclib-zoomed");
      close();
      if (open) fig.classList.add("mclib-zoomed");
    };
    img.addEventListener("click", toggle);
    img.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); toggle(); } });
  });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") close(); });
});
