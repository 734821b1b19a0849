// The history sidebar: stored conversations listed, opened (turns rebuilt as the CLI does),
// deleted; a new chat. The server's /api/conversations serves them when its history is on.
"use strict";

function modelTurns(messages) {  // history.turns_for_model: unanswered questions are dropped,
  const turns = [];                // tool plumbing skipped, an answer after a tool call joined
  let plumbing = false;
  for (const { role, text, blocks, node } of messages) {
    if (!text && blocks?.length) { plumbing = true; continue; }
    const answered = turns.at(-1)?.role === "user", afterTools = plumbing;
    plumbing = false;
    if (role === "user" && answered) turns.pop();
    if (role === "user" || (text && answered)) turns.push(makeTurn(role, text, node));
    else if (text && afterTools && turns.length) {
      turns.at(-1).content += `\n\n${text}`;
      turnArticles.set(turns.at(-1), node);
    }
  }
  if (turns.at(-1)?.role === "user") turns.pop();
  return turns;
}

function newChat() {
  state.controller?.abort();
  state.turns = [];
  state.conversationId = null;
  state.branch = false;
  $("messages").replaceChildren($("empty"));
  $("empty").hidden = false;
  showStatus("");
  markCurrent();
  $("prompt").focus();
}

async function openConversation(id) {
  try {
    const conversation = await apiJSON(`/api/conversations/${id}`);
    newChat();
    state.conversationId = id;
    const messages = conversation.messages.map((message) => {
      const node = addMessage(message.role, message.text, message.blocks);
      if (message.role === "assistant") {
        node.querySelector(".meta").textContent = summary({
          start: 0, first: (message.ttft ?? 0) * 1000, last: (message.total_time ?? 0) * 1000,
          tokens: message.output_tokens ?? 0, deltas: 0, note: message.interrupted ? "stopped" : "",
        });
        if (message.error) showError(node, message.error);
      }
      return { ...message, node };
    });
    state.turns = modelTurns(messages);
    const model = [...$("model").options].find((option) => option.value === conversation.model);
    if (model) model.selected = true;
    markCurrent();
    updateActions();
  } catch (error) {
    showStatus(describe(error));
  }
}

async function deleteConversation(id) {
  if (!confirm("Delete this conversation?")) return;
  try {
    await apiJSON(`/api/conversations/${id}`, { method: "DELETE" });
    if (id === state.conversationId) newChat();
  } catch (error) {
    showStatus(describe(error));
  }
  loadHistory();
}

function markCurrent() {
  for (const item of $("conversations").children) {
    item.classList.toggle("current", Number(item.dataset.id) === state.conversationId);
  }
}

function historyItem(conversation) {
  const item = el("li"), open = el("button", "open"), remove = el("button", "delete", "Delete");
  item.dataset.id = conversation.id;
  open.type = remove.type = "button";
  remove.setAttribute("aria-label", `Delete conversation ${conversation.id}`);
  const turns = `${conversation.turns} turn${conversation.turns === 1 ? "" : "s"}`;
  const date = new Date(conversation.updated_at);  // today: the time; before: the date
  const when = date.toDateString() === new Date().toDateString()
    ? date.toLocaleTimeString(undefined, { timeStyle: "short" })
    : date.toLocaleDateString(undefined, { dateStyle: "medium" });
  open.append(el("span", "", conversation.preview || "(empty)"));
  open.append(el("small", "", `${when} · ${turns}`));
  open.onclick = () => openConversation(conversation.id);
  remove.onclick = () => deleteConversation(conversation.id);
  item.append(open, remove);
  return item;
}

async function loadHistory() {  // the list, or why there is none (history off, no server)
  const note = $("history-note");
  try {
    const { data } = await apiJSON("/api/conversations?limit=50");
    state.historyOn = true;
    $("conversations").replaceChildren(...data.map(historyItem));
    note.textContent = data.length ? "" : "No conversations yet.";
    markCurrent();
  } catch (error) {  // history off (a 404 saying so), or no server
    if (error.type === "not_found_error") state.historyOn = false;
    $("conversations").replaceChildren();
    note.textContent = state.historyOn === false ? `${error.message}.` : describe(error);
  }
  note.hidden = !note.textContent;
}

async function loadModels() {
  try {
    const { data } = await apiJSON("/v1/models");
    loadInputs(data);  // what each model reads (attach.js)
    const label = (m) => (m.display_name === m.id ? m.id : `${m.display_name} (${m.id})`);
    $("model").replaceChildren(...data.map((m) => new Option(label(m), m.id)));
    const saved = localStorage.getItem("streamchat-model");
    if (data.some((m) => m.id === saved)) $("model").value = saved;
  } catch (error) {
    showStatus(`Could not list the models. ${describe(error)}`);
  }
}
