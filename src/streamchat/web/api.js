// Talking to the streamchat server: fetch with the API key (a 401 asks for it once), its
// errors as ChatError with a plain explanation, and Server-Sent Events read from a fetch body.
"use strict";

class ChatError extends Error {
  constructor(type, message) { super(message); this.type = type; }
}
const EXPLAIN = {
  overloaded_error: "The server is overloaded (too many requests at once). Try again in a moment.",
  rate_limit_error: "Too many requests. Try again in a moment.",
  request_too_large: "This conversation is too long for the server. Start a new chat.",
  timeout_error: "The model took too long to answer.",
};

function describe(error) {
  if (error.type === "connection") return error.message;
  return `${EXPLAIN[error.type] ?? "Error."} (${error.type}: ${error.message})`;
}

let keyPrompt = null;
function askKey() {  // one prompt, however many requests are waiting for the key
  keyPrompt ??= new Promise((resolve) => {
    $("key-form").hidden = false;
    $("key").focus();
    $("key-form").onsubmit = (event) => {
      event.preventDefault();
      sessionStorage.setItem("streamchat-key", $("key").value);
      $("key-form").hidden = true;
      keyPrompt = null;
      resolve();
    };
  });
  return keyPrompt;
}

async function api(path, options = {}) {  // fetch with the API key; a 401 asks for the key
  for (;;) {
    const key = sessionStorage.getItem("streamchat-key");
    const headers = { "anthropic-version": "2023-06-01", "content-type": "application/json" };
    const response = await fetch(path, {
      ...options, headers: { ...headers, ...(key && { "x-api-key": key }), ...options.headers },
    }).catch((error) => {
      if (error.name === "AbortError") throw error;
      throw new ChatError("connection", "Cannot reach the streamchat server. Is it still running?");
    });
    if (response.status !== 401) return response;
    sessionStorage.removeItem("streamchat-key");
    await askKey();
  }
}

async function failure(response) {  // {"type": "error", "error": {type, message}} -> ChatError
  const body = await response.json().catch(() => null);
  const error = body?.error ?? { type: `http_${response.status}`, message: response.statusText };
  return new ChatError(error.type, error.message);
}

async function apiJSON(path, options) {  // the JSON body, or the server's error thrown
  const response = await api(path, options);
  if (!response.ok) throw await failure(response);
  return response.json();
}

async function* serverSentData(body) {  // each SSE frame's data, as the bytes arrive
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const chunk = await reader.read().catch((error) => {
        if (error.name === "AbortError") throw error;
        throw new ChatError("connection", "Lost the connection to the server mid-reply.");
      });
      if (chunk.done) return;
      const frames = (buffer + chunk.value).replace(/\r\n?/g, "\n").split("\n\n");
      buffer = frames.pop();  // an incomplete frame waits for the next chunk
      for (const frame of frames) {  // "event:" is ignored: the JSON names its own type
        const data = frame.split("\n").filter((line) => line.startsWith("data:"));
        if (data.length) yield data.map((line) => line.slice(5).replace(/^ /, "")).join("\n");
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
