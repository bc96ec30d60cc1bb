// MathJax 3 configuration for pymdownx.arithmatex (generic mode): the renderer
// itself (tex-svg.js, self-contained, no fonts to fetch) is copied into the
// built site from the django-static-mathjax package by docs/_hooks/mathjax.py.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
  svg: { fontCache: "global" },
};
