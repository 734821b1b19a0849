// Applies the remembered theme before the page first paints (so a dark page never flashes
// light); without a choice the page follows prefers-color-scheme. app.js owns the toggle.
"use strict";
(() => {
  const theme = localStorage.getItem("streamchat-theme");
  if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
})();
