// The page: ask POST /v1/poems, show the poem large (horizontal or vertical), its tones and rhymes.
// Its choices, defaults and limits come from the server's request schema (/openapi.json), which is
// made from tangshi.options: one definition for the command line, Python, HTTP and this page.
"use strict";

const $ = (id) => document.getElementById(id);
const MARK = { "平": "○", "仄": "●", "*": "◐", "?": "·" };
const LABELS = { free: "自由 free", relaxed: "relaxed 一三五不论", strict: "strict", off: "off" };
let last = null;   // the last poem's response, for copying
let asked = 0;     // how many poems this page has asked for (a new seed each time)

function request() {
  const body = {
    begin: $("begin").value.trim(),
    acrostic: $("acrostic").value.trim(),
    form: $("form").value,
    tones: $("tones").value,
    title: $("title").value.trim(),
    keywords: $("keywords").value.split(/[\s,，、]+/).filter((w) => w),
    theme: $("theme").value.trim(),
    author: $("author").value,
    temperature: Number($("temperature").value),
    script: $("traditional").checked ? "traditional" : "simplified",
    seed: (Date.now() + asked++) % 2147483647,
  };
  return body;
}

function escapeHtml(s) {
  return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

function render(poem) {
  const p = poem.prosody;
  const regular = p.form !== "other";
  const rhyming = new Set();
  if (regular) {
    for (let i = 1; i < p.lines.length; i += 2) rhyming.add(i);
    if (p.first_line_rhymes) rhyming.add(0);
  }
  // the text split into its lines with punctuation, lined up with the prosody lines
  const pieces = poem.text.match(/[^，。！？；、]+[，。！？；、]?/g) || [poem.text];
  const planned = new Map((poem.plan || []).map((e) => [e.line, e.word]));
  const out = pieces.map((piece, i) => {
    const chars = [...piece];
    const word = planned.get(i) || "";
    const at = word ? piece.indexOf(word) : -1;
    const body = chars.map((c, k) => {
      const lastChar = k === chars.length - 1 - (/[，。！？；、]/.test(chars[chars.length - 1]) ? 1 : 0);
      const cls = [rhyming.has(i) && lastChar ? "rhyme" : "", at >= 0 && k >= at && k < at + word.length ? "kw" : ""];
      const names = cls.filter((x) => x).join(" ");
      return names ? `<span class="${names}">${escapeHtml(c)}</span>` : escapeHtml(c);
    }).join("");
    const tones = regular && $("marks").checked && p.actual[i]
      ? `<span class="marks" aria-label="tones">${[...p.actual[i]].map((t) => MARK[t] || t).join("")}</span>` : "";
    return `<div class="line"><span class="text">${body}</span>${tones}</div>`;
  });
  const box = $("poem");
  box.className = $("vertical").checked ? "vertical" : "";
  box.innerHTML = out.join("");
  const facts = [];
  if (regular) {
    facts.push(p.form, p.rhyme ? `押${p.rhyme_group}` : "不押韵", p.template_name,
      `平仄 relaxed ${p.relaxed.toFixed(2)} / strict ${p.strict.toFixed(2)}`);
  }
  if (poem.acrostic) facts.push(`藏头 ${poem.acrostic}`);
  if (poem.title) facts.push(`题 ${poem.title}`);
  if (poem.author) facts.push(`诗人 ${poem.author}`);
  facts.push(`log-likelihood ${poem.log_likelihood.toFixed(1)} nats (${poem.nll.toFixed(2)} a character)`);
  facts.push(`seed ${poem.seed}`);
  $("info").textContent = facts.join(" · ");
  $("plan").textContent = poem.plan
    ? "计划 plan: " + poem.plan.map((e) => `${e.line + 1} ${e.word}${e.given ? "" : "*"}`).join(" · ") + " (* chosen by the plan)"
    : "";
}

async function write(event) {
  if (event) event.preventDefault();
  $("error").hidden = true;
  $("write").disabled = $("another").disabled = true;
  try {
    const res = await fetch("/v1/poems", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request()),
    });
    const data = await res.json();
    if (!res.ok) {
      const d = data.detail;
      throw new Error(Array.isArray(d) ? d.map((e) => `${e.loc.slice(1).join(".")}: ${e.msg}`).join("; ") : d);
    }
    last = data.poems[0];
    render(last);
    $("copy").disabled = false;
    document.body.dataset.poems = asked;  // tests wait on this
  } catch (err) {
    $("error").textContent = err.message;
    $("error").hidden = false;
  } finally {
    $("write").disabled = false;
    $("another").disabled = last === null;
  }
}

async function copy() {
  if (!last) return;
  const text = last.lines.join("\n");
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = document.createElement("textarea");  // pages served over plain http on another host
    area.value = text;
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  $("copy").textContent = "已复制 Copied";
  setTimeout(() => { $("copy").textContent = "复制 Copy"; }, 1500);
}

// the options' choices and defaults from the request schema
async function setUp() {
  const spec = await (await fetch("/openapi.json")).json();
  const props = spec.components.schemas.PoemRequest.properties;
  for (const name of ["form", "tones"]) {
    const select = $(name);
    for (const value of props[name].enum) {
      const option = new Option(LABELS[value] || value, value);
      select.add(option);
    }
    select.value = props[name].default;
  }
  const t = props.temperature;
  $("temperature").value = t.default;
  $("tout").textContent = t.default;
  for (const name of ["begin", "acrostic"]) {
    const limit = props[name].maxLength ?? (props[name].anyOf || []).map((k) => k.maxLength).find((x) => x);
    if (limit) $(name).maxLength = limit;
  }
  const models = (await (await fetch("/v1/models")).json()).models;
  for (const name of Object.keys(models[0].authors || {})) $("author").add(new Option(name, name));
  for (const name of ["title", "theme"]) if (props[name].maxLength) $(name).maxLength = props[name].maxLength;
  document.body.dataset.ready = "1";  // tests wait on this
}

setUp().catch((err) => { $("error").textContent = `could not read the server's options: ${err.message}`; $("error").hidden = false; });
$("ask").addEventListener("submit", write);
$("another").addEventListener("click", () => write());
$("copy").addEventListener("click", copy);
$("temperature").addEventListener("input", () => { $("tout").textContent = $("temperature").value; });
for (const id of ["vertical", "marks"]) $(id).addEventListener("change", () => last && render(last));
