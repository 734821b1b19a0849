// streamchat web chat. Replies stream from POST /v1/messages (SSE read from a fetch body),
// resumable: a dropped connection or a reload resumes the reply where it was;
// model text only ever reaches the page as text nodes (markdown.js builds Markdown from DOM
// elements, never innerHTML), and the page's CSP forbids inline script besides. Beside this
// file (the conversation: sending, streaming, regenerate, edit): api.js talks to the server,
// history.js keeps the sidebar, settings.js the settings panel and the theme, attach.js the
// images and files sent with a message. They are classic scripts sharing one global scope,
// loaded in order (this one last, as it starts the page).
"use strict";

const CONVERSATION_HEADER = "x-streamchat-conversation";  // log this turn to that conversation
const LIVE_REPLY = "streamchat-live-reply";  // sessionStorage: the reply streaming now
const RENDER_MEASURE = "streamchat-render";  // each frame's render time (the browser test, DevTools)
const $ = (id) => document.getElementById(id);
// turns: [{role, content}] as sent; branch: an edit or a regeneration was sent, which the
// history logs as a new conversation (found by its content, then adopted by id)
const state = { turns: [], conversationId: null, historyOn: null, controller: null, branch: false };
const turnArticles = new WeakMap();  // a turn -> its <article> on the page

// ---- a reply's blocks: text (Markdown), tool calls (compact), thinking (collapsed) ------
// Each block keeps one element for its life, so a <details> the reader opened stays open
// while the reply streams; painting only refreshes the contents.
function blockNode(block) {
  if (block.type === "tool_use") {  // ⚙ get_weather({"city": "Paris"})
    const node = el("div", "tool-call");
    node.append(el("span", "tool-name", `⚙ ${block.name}`), el("code", "tool-input"));
    node.title = block.id ?? "";
    return node;
  }
  if (block.type === "thinking") {
    const node = el("details", "thinking");
    node.append(el("summary", "", "Thinking"), el("div", "thinking-text"));
    return node;
  }
  if (block.type === "tool_result") {
    const node = el("div", `tool-result${block.is_error ? " error" : ""}`);
    node.append(el("span", "tool-name", block.is_error ? "↩ tool error" : "↩ tool result"));
    node.append(el("code", "tool-input"));
    node.title = block.tool_use_id ?? "";
    return node;
  }
  return el("div", "text");
}

function compactJSON(value) {  // {"city": "Paris"}: as the CLI and `history show` write a call
  if (Array.isArray(value)) return `[${value.map(compactJSON).join(", ")}]`;
  if (value && typeof value === "object") {
    const member = ([key, item]) => `${JSON.stringify(key)}: ${compactJSON(item)}`;
    return `{${Object.entries(value).map(member).join(", ")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

function resultText(content) {  // a stored tool_result's content: a string or text blocks
  if (typeof content === "string") return content;
  return (content ?? []).map((part) => part.text ?? JSON.stringify(part)).join("");
}

function paintBlock(block) {
  const node = block.node;
  if (block.type === "tool_use") {
    // as streamed so far; a call given whole (or stored, or finished with no fragments): its input
    const args = block.json || (block.live ? "" : compactJSON(block.input ?? {}));
    node.querySelector(".tool-input").textContent = `(${args})`;
  } else if (block.type === "thinking") {
    node.querySelector(".thinking-text").textContent = block.thinking;
  } else if (block.type === "tool_result") {
    node.querySelector(".tool-input").textContent = resultText(block.content);
  } else {
    (block.view ??= new MarkdownView(node)).update(block.text, !block.live);
  }
}

function fromStored(stored) {  // a stored block (history) as a page block
  const block = { ...stored, node: blockNode(stored) };
  if (stored.type === "tool_use") block.json = stored.partial_json;  // cut short: as it came
  return block;
}

// ---- the conversation on the page -------------------------------------------------------
function actionButton(className, label, onclick) {
  const button = el("button", className, label);
  button.type = "button";
  button.hidden = true;  // updateActions shows the ones that apply
  button.onclick = onclick;
  return button;
}

function addMessage(role, text = "", blocks = null) {
  $("empty").hidden = true;
  const results = blocks?.length && blocks.every((block) => block.type === "tool_result");
  const plumbing = role === "user" && results;  // an agent's tool results: not the person
  const node = el("article", `message ${plumbing ? "tool" : role}`);
  const label = plumbing ? "Tool" : role === "user" ? "You" : "Assistant";
  node.append(el("div", "role", label), el("div", "body"), el("div", "meta"));
  const actions = node.appendChild(el("div", "actions"));
  if (role === "user" && !plumbing) {
    actions.append(actionButton("edit", "Edit", () => editTurn(node)));
  } else if (role === "assistant") {
    actions.append(actionButton("regenerate", "Regenerate", regenerate));
  }
  $("messages").append(node);
  const media = blocks?.filter((block) => block.type === "image" || block.type === "document");
  const rest = blocks?.filter((block) => !media.includes(block)) ?? [];
  if (rest.some((block) => block.type !== "text")) setBlocks(node, rest.map(fromStored));
  else setText(node, text, true);
  showAttachments(node, storedAttachments(media ?? []));
  $("messages").scrollTop = $("messages").scrollHeight;
  return node;
}

function setText(node, text, ended = false) {  // keeps the view at the bottom if the reader was
  const box = $("messages"), body = node.querySelector(".body");
  const stick = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  if (node.classList.contains("assistant")) (node.view ??= new MarkdownView(body)).update(text, ended);
  else body.textContent = text;
  if (stick) box.scrollTop = box.scrollHeight;
}

function setBlocks(node, blocks) {  // a reply with tool calls or thinking: one element each
  const box = $("messages"), body = node.querySelector(".body");
  const stick = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  blocks.forEach(paintBlock);
  const nodes = blocks.map((block) => block.node);
  if (nodes.length !== body.children.length || nodes.some((n, i) => body.children[i] !== n)) {
    body.replaceChildren(...nodes);
  }
  if (stick) box.scrollTop = box.scrollHeight;
}

const showError = (node, text) => node.querySelector(".meta").before(el("p", "error", text));
function showStatus(text) { $("status").textContent = text; $("status").hidden = !text; }

function summary(reply) {  // "TTFT 120 ms · 42 tokens · 35.1 tokens/s · stopped"
  const tokens = reply.tokens || reply.deltas, ttft = reply.first - reply.start;
  const decoding = (reply.last - reply.first) / 1e3;  // s; shorter than 50 ms says nothing
  return [
    reply.first && `TTFT ${ttft < 1e3 ? `${ttft.toFixed(0)} ms` : `${(ttft / 1e3).toFixed(2)} s`}`,
    tokens && `${tokens} tokens`,
    tokens > 1 && decoding > 0.05 && `${((tokens - 1) / decoding).toFixed(1)} tokens/s`,
    reply.note,
  ].filter(Boolean).join(" · ");
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  updateActions();
}

function updateActions() {  // Edit on your turns, Regenerate on the last reply; none while busy
  const busy = Boolean(state.controller);
  const articles = [...$("messages").querySelectorAll("article")];
  const lastUser = articles.findLast((article) => article.classList.contains("user"));
  const kept = new Set(state.turns.map((turn) => turnArticles.get(turn)));  // a failed one is not
  for (const article of articles) {
    const edit = article.querySelector("button.edit");
    const again = article.querySelector("button.regenerate");
    if (edit) edit.hidden = busy || !(kept.has(article) || article === lastUser);
    if (again) again.hidden = busy || article !== articles.at(-1) || !lastUser;
  }
}

// ---- regenerate and edit: send again from one of your turns -------------------------------
function resendFrom(userNode, text) {  // drop this turn and all after it, then send text there
  if (state.controller) return;
  const index = state.turns.findIndex((turn) => turnArticles.get(turn) === userNode);
  if (index !== -1) state.turns.length = index;  // (a failed turn was never kept)
  while (userNode.nextElementSibling) userNode.nextElementSibling.remove();
  if (state.historyOn !== false) {  // the history keeps the original; this branch is logged anew
    state.conversationId = null;
    state.branch = true;
    markCurrent();
  }
  send(text, userNode);
}

function regenerate() {  // the last reply again, with the settings and model chosen now
  const lastUser = [...$("messages").querySelectorAll("article.user")].at(-1);
  if (lastUser) resendFrom(lastUser, lastUser.querySelector(".body").textContent);
}

function editTurn(article) {  // the turn's text in a box; Send replaces it and all after it
  const body = article.querySelector(".body"), actions = article.querySelector(".actions");
  const editor = el("div", "editor"), box = el("textarea"), buttons = el("div", "buttons");
  const cancel = el("button", "", "Cancel"), save = el("button", "primary", "Send");
  cancel.type = save.type = "button";
  box.value = body.textContent;
  box.setAttribute("aria-label", "Edit your message");
  buttons.append(cancel, save);
  editor.append(box, buttons);
  body.hidden = actions.hidden = true;
  body.after(editor);
  box.focus();
  const close = () => {
    editor.remove();
    body.hidden = actions.hidden = false;
  };
  cancel.onclick = () => {
    close();
    article.querySelector("button.edit").focus();
  };
  save.onclick = () => {
    if (!box.value.trim() || state.controller) return;
    close();
    resendFrom(article, box.value);
    $("prompt").focus();
  };
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      save.click();
    } else if (event.key === "Escape") {
      cancel.click();
    }
  });
}

async function copyCode(button) {
  const code = button.closest(".code-block").querySelector("code").textContent;
  const said = await navigator.clipboard.writeText(code).then(() => "Copied", () => "Copy failed");
  button.textContent = said;
  setTimeout(() => (button.textContent = "Copy"), 1500);
}

// ---- sending ----------------------------------------------------------------------------
async function conversationId(turns) {  // history on: the conversation this chat is logged to
  if (state.branch) await adoptBranch(turns.slice(0, -1));
  if (state.branch) return null;  // still unknown: the server finds the branch by its content
  if (state.historyOn !== false && state.conversationId === null) {  // on, or not known yet
    const body = JSON.stringify({ model: $("model").value });
    const created = await apiJSON("/api/conversations", { method: "POST", body }).catch(() => null);
    if (created && state.turns === turns) state.conversationId = created.id;  // else: by content
  }
  return state.conversationId;
}

async function adoptBranch(turns) {  // the newest conversation, if it holds exactly these turns
  const pairs = (list) => JSON.stringify(list.map(({ role, content }) => [role, content]));
  const newest = (await apiJSON("/api/conversations?limit=1").catch(() => null))?.data?.[0];
  const stored = newest && (await apiJSON(`/api/conversations/${newest.id}`).catch(() => null));
  if (stored && state.branch && pairs(modelTurns(stored.messages)) === pairs(turns)) {
    state.branch = false;
    state.conversationId = newest.id;
    markCurrent();
  }
}

function settingsBody() {  // the settings panel's choices, as Messages API fields
  const { system, temperature, maxTokens } = currentSettings();
  return {
    max_tokens: maxTokens,
    ...(system.trim() && { system }),
    ...(temperature !== null && { temperature }),
  };
}

function makeTurn(role, content, node) {
  const made = { role, content };
  if (node) turnArticles.set(made, node);
  return made;
}

async function send(text, userNode = null) {
  const turns = state.turns;  // "New chat" swaps in a new array: this reply keeps its own
  const attached = userNode ? { blocks: [], shown: [] } : takeAttachments();  // (attach.js)
  if (userNode) userNode.querySelector(".body").textContent = text;
  else showAttachments((userNode = addMessage("user", text)), attached.shown);
  const lead = text.trim() ? [{ type: "text", text }] : [];
  const content = attached.blocks.length ? [...lead, ...attached.blocks] : text;
  turns.push(makeTurn("user", content, userNode));
  await streamReply(turns, async (signal, reply) => {
    const id = await conversationId(turns);
    const body = { model: $("model").value || "default", ...settingsBody(), stream: true };
    reply.start = performance.now();
    return api("/v1/messages", {
      method: "POST", signal, body: JSON.stringify({ ...body, messages: turns }),
      headers: { ...RESUMABLE, ...(id === null ? {} : { [CONVERSATION_HEADER]: String(id) }) },
    });
  });
}

// The reply to `turns` from `open(signal, reply)` (a response), into a new article. It is
// resumable: a dropped connection resumes it (replyEvents), and while it streams the page
// remembers it (sessionStorage), so that a reload resumes it too (resumeAfterReload).
async function streamReply(turns, open, live = { id: null, last: -1 }) {
  showStatus("");
  const node = addMessage("assistant");
  node.classList.add("streaming");
  node.setAttribute("aria-busy", "true");  // screen readers read the reply once it is whole
  const controller = (state.controller = new AbortController());
  setBusy(true);
  const reply = { text: "", tokens: 0, deltas: 0, start: 0, first: 0, last: 0, note: "" };
  const blocks = [];  // by stream index: {type, node, live, text | json | thinking}
  const paint = (ended = false) => (blocks.some((b) => b.type !== "text")
    ? setBlocks(node, blocks.filter(Boolean)) : setText(node, reply.text, ended));
  let painting = false;
  performance.clearMeasures(RENDER_MEASURE);
  live.onRetry = (attempt) => showStatus(attempt ? "Connection lost: resuming the reply…" : "");
  try {
    const response = await open(controller.signal, reply);
    for await (const event of replyEvents(response, live, controller.signal)) {
      rememberLive(turns, live);
      if (event.type === "content_block_start") {
        const start = event.content_block;
        const block = { type: start.type, text: start.text ?? "", thinking: start.thinking ?? "" };
        if (start.type === "tool_use") {
          const { id, name, input } = start;
          Object.assign(block, { id, name, input, json: "" });
        }
        block.live = true;
        block.node = blockNode(block);
        blocks[event.index] = block;
        reply.text += block.text;
      } else if (event.type === "content_block_delta") {
        const delta = event.delta;
        blocks[event.index] ??= { type: "text", text: "", live: true, node: blockNode({}) };
        const block = blocks[event.index];
        if (delta.type === "text_delta") {
          block.text += delta.text;
          reply.text += delta.text;
        } else if (delta.type === "input_json_delta") {
          block.json += delta.partial_json;
        } else if (delta.type === "thinking_delta") {
          block.thinking += delta.thinking;
        }
        if (delta.type !== "signature_delta") {  // any generated content counts (TTFT too)
          reply.deltas += 1;
          reply.last = performance.now();
          reply.first ||= reply.last;
        }
        if (!painting) {  // at most one render per frame, however fast tokens come
          painting = true;
          requestAnimationFrame(() => {
            painting = false;
            const start = performance.now();
            paint();
            performance.measure(RENDER_MEASURE, { start, detail: { tokens: reply.deltas } });
          });
        }
      } else if (event.type === "content_block_stop") {
        if (blocks[event.index]) blocks[event.index].live = false;
      } else if (event.type === "message_delta") {
        reply.tokens = event.usage?.output_tokens ?? 0;
        if (event.delta?.stop_reason === "max_tokens") reply.note = "cut off at max_tokens";
      } else if (event.type === "error") {
        throw new ChatError(event.error.type, event.error.message);
      }
    }
  } catch (error) {
    if (error.name === "AbortError") {
      reply.note = "stopped";
      if (live.id) cancelReply(live.id);
    } else {
      showStatus("");
      showError(node, describe(error));
    }
  }
  sessionStorage.removeItem(LIVE_REPLY);
  node.classList.remove("streaming");
  node.setAttribute("aria-busy", "false");
  for (const block of blocks) if (block) block.live = false;  // a call cut short shows what came
  paint(true);
  node.querySelector(".meta").textContent = summary(reply);
  if (reply.text) turns.push(makeTurn("assistant", reply.text, node));
  else turns.pop();  // nothing came back: keep the turns alternating, as the CLI does
  if (state.controller === controller) {
    state.controller = null;
    setBusy(false);
  }
  await loadHistory();
  if (state.branch && state.turns === turns) await adoptBranch(turns);
}

function rememberLive(turns, live) {  // once per reply: what a reload needs to resume it
  if (!live.id || live.remembered) return;
  live.remembered = true;
  const saved = { id: live.id, conversationId: state.conversationId, branch: state.branch,
                  turns: turns.map(({ role, content }) => ({ role, content })) };
  try {
    sessionStorage.setItem(LIVE_REPLY, JSON.stringify(saved));
  } catch {}  // over the storage quota (large attachments): a reload just loses the reply
}

function contentText(content) {  // a turn's text, whether a string or blocks
  if (typeof content === "string") return content;
  return content.filter((block) => block.type === "text").map((block) => block.text).join("");
}

async function resumeAfterReload() {  // the page was reloaded mid-reply: show it, and go on
  const saved = JSON.parse(sessionStorage.getItem(LIVE_REPLY) ?? "null");
  if (!saved?.id) return;
  Object.assign(state, { conversationId: saved.conversationId, branch: saved.branch });
  for (const { role, content } of saved.turns) {
    state.turns.push(makeTurn(role, content, addMessage(role, contentText(content))));
  }
  const open = (signal) => api(`/v1/streams/${saved.id}`, { signal });  // all of it, again
  await streamReply(state.turns, open, { id: saved.id, last: -1 });
}

function submit() {
  const text = $("prompt").value;
  if ((!text.trim() && !attachState.files.length) || state.controller) return;
  $("prompt").value = "";
  send(text);
}

// ---- wiring -----------------------------------------------------------------------------
$("composer").addEventListener("submit", (event) => { event.preventDefault(); submit(); });
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();  // Enter sends; Shift+Enter keeps the textarea's new line
    submit();
  } else if (event.key === "Escape") {
    state.controller?.abort();
  }
});
$("stop").addEventListener("click", () => state.controller?.abort());
$("messages").addEventListener("click", (event) => {
  const copy = event.target.closest("button.copy");
  if (copy) copyCode(copy);
});
$("new-chat").addEventListener("click", newChat);
$("model").addEventListener("change", () => localStorage.setItem("streamchat-model", $("model").value));
document.addEventListener("click", (event) => {  // the phone's drawer: ☰ toggles, a choice closes
  const toggle = event.target.closest("#toggle-sidebar");
  if (!toggle && !event.target.closest("#new-chat, .open, main")) return;
  const open = Boolean(toggle) && !document.body.classList.contains("sidebar-open");
  document.body.classList.toggle("sidebar-open", open);
  $("toggle-sidebar").setAttribute("aria-expanded", open);
});
wireAttachments();
loadModels();
loadHistory();
resumeAfterReload();
$("prompt").focus();
