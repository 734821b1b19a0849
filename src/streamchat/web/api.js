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

async function* serverSentEvents(body) {  // each SSE frame as {id, data}, as the bytes arrive
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
        const lines = frame.split("\n");
        const field = (name) => lines.filter((line) => line.startsWith(name + ":"))
          .map((line) => line.slice(name.length + 1).replace(/^ /, ""));
        const data = field("data");
        if (data.length) yield { id: field("id").pop() ?? null, data: data.join("\n") };
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

// ---- a reply that survives the network -------------------------------------------------
// A reply asked for as resumable (x-streamchat-resumable) goes on generating when the
// connection drops; the server names it (x-streamchat-reply) and numbers every frame (id:),
// so a reader that lost the connection resumes with GET /v1/streams/{id} and Last-Event-ID.
const RESUMABLE = { "x-streamchat-resumable": "true" };
const REPLY_HEADER = "x-streamchat-reply";
const RESUME_ATTEMPTS = 6;  // then the drop is reported (waits 0.25 s, doubling: ~16 s in all)

// The reply's events (parsed) from `response` on, resuming after each drop. `live` is kept
// up to date: {id: the reply's, last: the last frame read, onRetry(attempt): told of each
// resume (0: it worked)}.
async function* replyEvents(response, live, signal) {
  let ended = false;
  for (let attempt = 0; ; attempt++) {
    try {
      if (response === null) throw new ChatError("connection", "Cannot reach the streamchat server.");
      if (!response.ok) throw await failure(response);
      live.id ??= response.headers.get(REPLY_HEADER);
      for await (const frame of serverSentEvents(response.body)) {
        if (frame.id !== null) live.last = Number(frame.id);
        if (attempt) live.onRetry?.((attempt = 0));
        const event = JSON.parse(frame.data);
        ended ||= event.type === "message_stop";
        yield event;
      }
      if (ended) return;  // read to the body's end: the server closes it once the reply is stored
      throw new ChatError("connection", "The server closed the connection mid-reply.");
    } catch (error) {
      if (ended) return;
      if (error.name === "AbortError" || error.type !== "connection" || !live.id) throw error;
      if (attempt >= RESUME_ATTEMPTS) throw error;
    }
    live.onRetry?.(attempt + 1);
    await new Promise((resolve) => setTimeout(resolve, 250 * 2 ** attempt));
    const headers = { "last-event-id": String(live.last) };
    response = await api(`/v1/streams/${live.id}`, { signal, headers }).catch((error) => {
      if (error.name === "AbortError") throw error;
      return null;  // still unreachable: the next attempt says so, or tries again
    });
  }
}

function cancelReply(id) {  // stop its generation now (a resumable reply outlives its reader)
  api(`/v1/streams/${id}/cancel`, { method: "POST" }).catch(() => {});
}
