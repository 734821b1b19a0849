// Images and files sent with a message: picked (+), dropped on the composer or pasted into the
// prompt; each shown in the tray (a thumbnail, or its name) until the message is sent. Images go
// only to a model that reads them (GET /v1/models says so: input_modalities); PDFs and text
// files to any (the embedded models read a PDF's text). Sent as Anthropic image / document
// blocks; stored ones (history) are shown from /api/attachments/<sha256>.
"use strict";

const IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"];
const MAX_FILE_BYTES = 5 * 1024 * 1024;  // Anthropic's limit for an image; the server checks
const attachState = { files: [], inputs: {} };  // files: [{name, type, kind, data, url}]

function modelReads(kind) {  // a model not listed (yet): let the server decide
  const inputs = attachState.inputs[$("model").value];
  return !inputs || inputs.includes(kind);
}

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.slice(reader.result.indexOf(",") + 1));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function addFiles(files) {
  for (const file of files) {
    const kind = IMAGE_TYPES.includes(file.type) ? "image" : "document";
    const type = file.type || "text/plain";
    if (kind === "document" && type !== "application/pdf" && !type.startsWith("text/")) {
      showStatus(`${file.name}: only images, PDFs and text files can be attached.`);
      continue;
    }
    if (kind === "image" && !modelReads("image")) {
      showStatus(`${file.name}: ${$("model").value} reads no images; choose a model that does.`);
      continue;
    }
    if (file.size > MAX_FILE_BYTES && kind === "image") {
      showStatus(`${file.name}: ${file.size} bytes, over the 5 MB an image may be.`);
      continue;
    }
    const data = await readBase64(file);
    const url = kind === "image" ? URL.createObjectURL(file) : null;
    attachState.files.push({ name: file.name, type, kind, data, url });
    showStatus("");
  }
  paintTray();
}

function attachmentNode(name, kind, url) {  // a thumbnail, or the file's name
  const item = el("figure", `attachment ${kind}`);
  if (url) {
    const image = el("img");
    image.src = url;
    image.alt = name;
    item.append(image);
  } else {
    item.append(el("span", "file-name", name));
  }
  item.title = name;
  return item;
}

function paintTray() {
  const tray = $("attachments");
  tray.replaceChildren(...attachState.files.map((file, index) => {
    const item = attachmentNode(file.name, file.kind, file.url);
    const remove = el("button", "remove", "×");
    remove.type = "button";
    remove.setAttribute("aria-label", `Remove ${file.name}`);
    remove.onclick = () => {
      attachState.files.splice(index, 1);
      paintTray();
    };
    item.append(remove);
    return item;
  }));
  tray.hidden = !attachState.files.length;
}

function takeAttachments() {  // the tray's files as message blocks (and their thumbnails)
  const files = attachState.files;
  attachState.files = [];
  paintTray();
  const blocks = files.map(({ name, type, kind, data }) => {
    const source = { type: "base64", media_type: type, data };
    if (kind === "image") return { type: "image", source };
    if (type.startsWith("text/")) {
      const text = new TextDecoder().decode(Uint8Array.from(atob(data), (c) => c.charCodeAt(0)));
      return { type: "document", title: name, source: { type: "text", media_type: "text/plain", data: text } };
    }
    return { type: "document", title: name, source };
  });
  return { blocks, shown: files.map(({ name, kind, url }) => attachmentNode(name, kind, url)) };
}

function storedAttachments(blocks) {  // a stored message's images and documents, as nodes
  return blocks.filter((b) => b.type === "image" || b.type === "document").map((block) => {
    const source = block.source ?? {};
    const node = attachmentNode(block.title ?? block.type, block.type, null);
    if (block.type === "image" && source.type === "attachment") {  // fetched with the API key
      node.replaceChildren();
      api(`/api/attachments/${source.sha256}`).then(async (response) => {
        const image = el("img");
        image.src = URL.createObjectURL(await response.blob());
        image.alt = "image";
        node.append(image);
      }).catch(() => node.append(el("span", "file-name", "image (unavailable)")));
    } else if (block.type === "image" && source.type === "base64") {
      node.replaceChildren(el("img"));
      node.firstChild.src = `data:${source.media_type};base64,${source.data}`;
    }
    return node;
  });
}

function showAttachments(node, nodes) {  // below the message's text
  if (!nodes.length) return;
  const row = el("div", "attachments");
  row.append(...nodes);
  node.querySelector(".body").after(row);
}

async function loadInputs(models) {
  for (const model of models) attachState.inputs[model.id] = model.input_modalities;
}

function wireAttachments() {  // called by app.js once the page's scripts are all loaded
  $("attach").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", async () => {
    await addFiles([...$("file").files]);
    $("file").value = "";
  });
  $("composer").addEventListener("dragover", (event) => event.preventDefault());
  $("composer").addEventListener("drop", (event) => {
    event.preventDefault();
    addFiles([...event.dataTransfer.files]);
  });
  $("prompt").addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files ?? [])];
    if (files.length) {
      event.preventDefault();
      addFiles(files);
    }
  });
}
