// The settings panel (system prompt, temperature, max tokens: sent with each request) and the
// theme (light, dark, or following prefers-color-scheme), both remembered in localStorage.
"use strict";

const SETTINGS_KEY = "streamchat-settings";
const THEME_KEY = "streamchat-theme";  // theme.js applies it before the first paint
const DEFAULT_SETTINGS = { system: "", temperature: null, maxTokens: 1024 };

function currentSettings() {  // what is stored, each field checked (storage may be stale)
  let saved = {};
  try {
    saved = JSON.parse(localStorage.getItem(SETTINGS_KEY)) ?? {};
  } catch {
    saved = {};
  }
  const { system, temperature, maxTokens } = { ...DEFAULT_SETTINGS, ...saved };
  return {
    system: typeof system === "string" ? system : "",
    temperature: typeof temperature === "number" && temperature >= 0 && temperature <= 1
      ? temperature : null,
    maxTokens: Number.isInteger(maxTokens) && maxTokens > 0 ? maxTokens : DEFAULT_SETTINGS.maxTokens,
  };
}

function openSettings() {
  const settings = currentSettings();
  document.getElementById("system").value = settings.system;
  document.getElementById("temperature").value = settings.temperature ?? "";
  document.getElementById("max-tokens").value = settings.maxTokens;
  document.getElementById("theme-choice").value = localStorage.getItem(THEME_KEY) ?? "";
  document.getElementById("settings").showModal();
}

function saveSettings() {  // the form's own checks (min, max, required) have passed
  const temperature = document.getElementById("temperature").value;
  localStorage.setItem(SETTINGS_KEY, JSON.stringify({
    system: document.getElementById("system").value,
    temperature: temperature === "" ? null : Number(temperature),
    maxTokens: Number(document.getElementById("max-tokens").value),
  }));
  setTheme(document.getElementById("theme-choice").value);
}

function effectiveTheme() {
  const chosen = document.documentElement.dataset.theme;
  return chosen ?? (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
}

function setTheme(theme) {  // "light", "dark", or "" to follow the system again
  if (theme === "light" || theme === "dark") {
    document.documentElement.dataset.theme = theme;
    localStorage.setItem(THEME_KEY, theme);
  } else {
    delete document.documentElement.dataset.theme;
    localStorage.removeItem(THEME_KEY);
  }
  showTheme();
}

function showTheme() {  // the toggle names what it will do
  const other = effectiveTheme() === "dark" ? "light" : "dark";
  document.getElementById("theme").setAttribute("aria-label", `Switch to ${other} theme`);
  document.getElementById("theme").title = `Switch to ${other} theme`;
}

document.getElementById("open-settings").addEventListener("click", openSettings);
document.getElementById("settings-form").addEventListener("submit", saveSettings);
document.getElementById("settings-cancel").addEventListener("click", () => {
  document.getElementById("settings").close();
});
document.getElementById("theme").addEventListener("click", () => {
  setTheme(effectiveTheme() === "dark" ? "light" : "dark");
});
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", showTheme);
showTheme();
