// streamchat's Markdown for the web page, built from DOM elements and text nodes (never
// innerHTML), so model text cannot become markup. MarkdownView renders a streaming reply
// incrementally: blocks that can no longer change are built once and kept; each frame parses
// only the open block at the end (the "live tail"), so the cost of a frame does not grow with
// the length of the reply.
"use strict";

function el(tag, className = "", text = undefined) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---- inline: `code`, **bold**, ~~strike~~, *italic*, [links](https://...) -----------------
const INLINE = new RegExp(
  [
    /`([^`\n]+)`/.source,
    /\*\*([^*\n]+)\*\*/.source,
    /~~([^~\n]+)~~/.source,
    /\*([^*\s](?:[^*\n]*[^*\s])?)\*/.source,
    /\[([^\]\n]+)\]\((https?:\/\/[^\s()]+)\)/.source,
  ].join("|"),
  "g",
);

function inline(text, parent) {
  let last = 0;
  for (const match of text.matchAll(INLINE)) {
    parent.append(text.slice(last, match.index));
    const [, code, bold, strike, italic, label, href] = match;
    if (code !== undefined) parent.append(el("code", "", code));
    else if (bold !== undefined) inline(bold, parent.appendChild(el("strong")));
    else if (strike !== undefined) inline(strike, parent.appendChild(el("del")));
    else if (italic !== undefined) inline(italic, parent.appendChild(el("em")));
    else {
      const link = parent.appendChild(el("a", "", label));
      Object.assign(link, { href, rel: "noopener noreferrer", target: "_blank" });  // http(s) only
    }
    last = match.index + match[0].length;
  }
  parent.append(text.slice(last));
}

// ---- code: highlight.js (vendor/highlight.min.js), its HTML turned back into nodes --------
const ENTITIES = { amp: "&", lt: "<", gt: ">", quot: '"', "#x27": "'" };

function tokenNodes(html) {
  // highlight.js escapes the code and adds only <span class="hljs-…"> around tokens; rebuild
  // those spans with DOM calls so no model text is ever parsed as HTML
  const root = document.createDocumentFragment();
  const stack = [root];
  for (const [tag, scope, text] of html.matchAll(/<span class="([^"<>]*)">|<\/span>|([^<]+)/g)) {
    if (text !== undefined) {
      stack.at(-1).append(text.replace(/&(amp|lt|gt|quot|#x27);/g, (_, name) => ENTITIES[name]));
    } else if (scope !== undefined) {
      stack.push(stack.at(-1).appendChild(el("span", scope)));
    } else if (tag === "</span>" && stack.length > 1) {
      stack.pop();
    }
  }
  return root;
}

function highlight(code, language) {  // a fragment of token spans, or plain text
  const known = language && globalThis.hljs?.getLanguage(language);
  if (!known) return document.createTextNode(code);
  return tokenNodes(globalThis.hljs.highlight(code, { language, ignoreIllegals: true }).value);
}

function codeBlock(language) {  // <div.code-block> header (language, Copy) + <pre><code>
  const block = el("div", "code-block");
  const head = block.appendChild(el("div", "code-head"));
  head.append(el("span", "code-lang", language || "text"));
  const copy = head.appendChild(el("button", "copy", "Copy"));
  copy.type = "button";
  copy.setAttribute("aria-label", `Copy ${language || "text"} code`);
  const pre = block.appendChild(el("pre"));
  pre.tabIndex = 0;  // a scrollable region is reachable by keyboard
  pre.append(el("code", language ? `hljs language-${language}` : "hljs"));
  return block;
}

function finishedCode(language, code) {
  const block = codeBlock(language);
  block.querySelector("code").append(highlight(code, language));
  return block;
}

// ---- tables (GitHub style) ------------------------------------------------------------------
const DELIMITER = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;

function cells(line) {  // "| a | b |" -> ["a", "b"]; "\|" is a literal bar
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  return row.split(/(?<!\\)\|/).map((cell) => cell.trim().replaceAll("\\|", "|"));
}

function isTableStart(line, next) {
  if (next === undefined || !line.includes("|") || !DELIMITER.test(next) || !next.includes("-")) {
    return false;
  }
  return cells(line).length === cells(next).length;
}

function table(header, delimiter, rows) {
  const align = cells(delimiter).map((cell) =>
    cell.endsWith(":") ? (cell.startsWith(":") ? "center" : "right") : cell.startsWith(":") ? "left" : "",
  );
  const row = (line, tag) => {
    const tr = el("tr");
    cells(line).slice(0, align.length).forEach((text, i) => {
      inline(text, tr.appendChild(el(tag, align[i] && `align-${align[i]}`)));
    });
    return tr;
  };
  const wrap = el("div", "table-wrap");
  wrap.tabIndex = 0;  // may scroll sideways on a phone
  wrap.setAttribute("role", "region");
  wrap.setAttribute("aria-label", "Table");
  const node = wrap.appendChild(el("table"));
  node.appendChild(el("thead")).append(row(header, "th"));
  if (rows.length) node.appendChild(el("tbody")).append(...rows.map((line) => row(line, "td")));
  return wrap;
}

// ---- blocks -----------------------------------------------------------------------------
const FENCE = /^\s*(```|~~~)\s*([\w+#.-]*)/;
const HEADING = /^(#{1,6})\s+(.*)$/;
const RULE = /^\s*([-*_])(\s*\1){2,}\s*$/;
const ITEM = /^\s*([-*+]|\d{1,9}[.)])\s+(.*)$/;
const QUOTE = /^\s*>\s?(.*)$/;

// Parse lines into blocks: {node, first, last (line indexes), closed (nothing can be added
// to it)}. Every block starts from a clean state (a new block flushes
// the paragraph and the list), so parsing from any block's first line gives the same blocks
// as parsing the whole text: what MarkdownView relies on. ``code(language, text)`` builds an
// open fence's element (the view reuses one while it streams).
function parseBlocks(lines, code = finishedCode) {
  const blocks = [];
  let paragraph = null, list = null;
  const add = (node, first, last, closed = false) => {
    paragraph = list = null;
    const block = { node, first, last, closed };
    blocks.push(block);
    return block;
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = line.match(FENCE);
    const heading = line.match(HEADING);
    const item = line.match(ITEM);
    if (fence) {  // an unclosed fence (still streaming) holds the rest of the reply
      const first = i, body = [];
      while (++i < lines.length && !lines[i].trimStart().startsWith(fence[1])) body.push(lines[i]);
      const closed = i < lines.length, language = fence[2];
      const node = closed ? finishedCode(language, body.join("\n")) : code(language, body.join("\n"));
      add(node, first, Math.min(i, lines.length - 1), closed);
    } else if (heading) {
      const node = el(`h${Math.min(heading[1].length + 2, 6)}`);
      inline(heading[2], node);
      add(node, i, i, true);
    } else if (isTableStart(line, lines[i + 1])) {
      const first = i, rows = [];
      for (i += 2; i < lines.length && lines[i].trim() && lines[i].includes("|"); i++) {
        rows.push(lines[i]);
      }
      i -= 1;
      add(table(line, lines[first + 1], rows), first, Math.max(i, first + 1));
    } else if (RULE.test(line)) {
      add(el("hr"), i, i, true);
    } else if (QUOTE.test(line)) {
      const first = i, inner = [];
      for (; i < lines.length && QUOTE.test(lines[i]); i++) inner.push(lines[i].match(QUOTE)[1]);
      i -= 1;
      const node = el("blockquote");
      node.append(...parseBlocks(inner).map((block) => block.node));
      add(node, first, i);
    } else if (item) {
      const tag = /\d/.test(item[1]) ? "OL" : "UL";
      if (list?.node.tagName !== tag) {
        list = add(el(tag), i, i);
        if (tag === "OL") list.node.start = parseInt(item[1], 10);
      }
      list.last = i;
      inline(item[2], list.node.appendChild(el("li")));
    } else if (list && /^\s+\S/.test(line)) {
      list.last = i;
      inline(`\n${line.trim()}`, list.node.lastChild);  // an indented continuation
    } else if (!line.trim()) {
      paragraph = list = null;
    } else if (paragraph) {
      paragraph.last = i;
      paragraph.text += `\n${line}`;
    } else {
      paragraph = add(el("p"), i, i);
      paragraph.text = line;
    }
  }
  for (const block of blocks) if (block.text !== undefined) inline(block.text, block.node);
  return blocks;
}

function renderMarkdown(text, root) {  // a whole text at once (stored replies, user tests)
  root.replaceChildren(...parseBlocks(text.split("\n")).map((block) => block.node));
}

// ---- incremental rendering ---------------------------------------------------------------
class MarkdownView {
  static CHUNK = 32;

  // A block is final once the text after it shows it cannot change: a heading, rule or
  // closed fence once its own line is complete; any other block once a complete line
  // follows it (that line was not taken into it). Final blocks stay in the DOM untouched;
  // the text from the first non-final block on is parsed again on each update.
  constructor(root) {
    this.root = root;
    this.reset();
  }

  reset() {
    this.root.replaceChildren();
    this.done = 0;  // offset in the text where the live tail starts
    this.length = 0;
    this.live = [];  // the live tail's nodes, after the final ones
    this.openCode = null;  // the streaming fence's element, kept across frames
    this.chunk = null;  // the group that final blocks join
  }

  update(text, ended = false) {  // the whole text so far: it only grows while streaming
    if (text.length < this.length) this.reset();
    this.length = text.length;
    const lines = text.slice(this.done).split("\n");
    const complete = ended ? lines.length : lines.length - 1;  // the last line may grow
    const blocks = parseBlocks(lines, (language, code) => this.streamingCode(language, code, ended));
    let final = 0;
    for (const block of blocks) {
      const known = block.closed ? block.last < complete : block.last + 1 < complete;
      if (!known || ended) break;
      final += 1;
    }
    const nodes = blocks.map((block) => block.node);
    this.patch(nodes);
    if (final) {
      const resume = blocks[final - 1].last + 1;
      this.done += lines.slice(0, resume).reduce((sum, line) => sum + line.length + 1, 0);
      nodes.slice(0, final).forEach((node) => this.keep(node));
      this.live = nodes.slice(final);
      if (!this.live.includes(this.openCode?.node)) this.openCode = null;
    }
  }

  keep(node) {
    // final blocks are grouped (CHUNK to a group) so that laying out the reply as it grows
    // visits a few groups, not every block of a long reply
    if (!this.chunk?.isConnected || this.chunk.childElementCount >= MarkdownView.CHUNK) {
      this.chunk = el("div", "md-chunk");
      node.before(this.chunk);
    }
    this.chunk.append(node);
  }

  patch(nodes) {  // replace the previous live nodes with these, keeping any that are the same
    nodes.forEach((node, i) => {
      const old = this.live[i];
      if (old === undefined) this.root.append(node);
      else if (old !== node) old.replaceWith(node);
    });
    for (const old of this.live.slice(nodes.length)) old.remove();
    this.live = nodes;
  }

  streamingCode(language, code, ended) {
    // one element while the fence streams: complete lines are highlighted (again only when a
    // new line completes), the growing last line is plain text until its newline comes
    const cut = ended ? code.length : code.lastIndexOf("\n") + 1;
    const lines = code.slice(0, cut), pending = code.slice(cut);
    let open = this.openCode;
    if (open?.language !== language || !this.live.includes(open.node) || !code.startsWith(open.lines)) {
      open = this.openCode = { language, node: codeBlock(language), lines: null, tail: null };
    }
    const element = open.node.querySelector("code");
    if (open.lines !== lines) {
      open.lines = lines;
      open.tail = document.createTextNode("");
      element.replaceChildren(highlight(lines, language), open.tail);
    }
    open.tail.data = pending;
    return open.node;
  }
}
