// The page: ask POST /v1/poems, show the poem large (horizontal or vertical), its tones and rhymes.
// Its choices, defaults and limits come from the server's request schema (/openapi.json), which is
// made from tangshi.options: one definition for the command line, Python, HTTP and this page.
"use strict";

const $ = (id) => document.getElementById(id);
const MARK = { "平": "○", "仄": "●", "*": "◐", "?": "·" };
const LABELS = { free: "自由 free", relaxed: "relaxed 一三五不论", strict: "strict", off: "off" };
let last = null;   // the poem shown (a poem of POST /v1/poems, or one made from POST /v1/check)
let asked = 0;     // how many poems this page has asked for (a new seed each time)
let locks = new Set();   // "line:place" of the locked characters (0-based)
const history = { past: [], future: [] };  // undo / redo of the poems shown
let checking = 0;  // the latest live check asked (older answers are dropped)

function request() {
  const cipai = $("cipai").value.trim();
  const body = {
    begin: $("begin").value.trim(),
    acrostic: $("acrostic").value.trim(),
    form: cipai ? "free" : $("form").value,
    cipai,
    format: Number($("cformat").value) || 1,
    tones: $("tones").value,
    title: $("title").value.trim(),
    keywords: $("keywords").value.split(/[\s,，、]+/).filter((w) => w),
    theme: $("theme").value.trim(),
    author: $("author").value,
    genre: $("genre").value,
    temperature: Number($("temperature").value),
    script: $("traditional").checked ? "traditional" : "simplified",
    seed: (Date.now() + asked++) % 2147483647,
  };
  return body;
}

function escapeHtml(s) {
  return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

// a 词: each 阕 on its own, its 韵位 in red, the 词牌's pattern under it
function renderCi(poem) {
  const p = poem.prosody;
  const rhymes = new Map(p.rhymes.map((r) => [r.position, r]));
  const patterns = p.pattern.split("\n");
  let at = 0;  // the character's position in the 词
  const sentences = (text) => text.match(/[^。！？]+[。！？]?/g) || [text];
  const out = poem.lines.map((part, i) => {
    const shown = $("marks").checked ? sentences(patterns[i] || "") : [];
    const rows = sentences(part).map((sentence, k) => {
      const body = [...sentence].map((c) => {
        if (/[，。！？；、]/.test(c)) return escapeHtml(c);
        const r = rhymes.get(at++);
        const cls = r ? (r.ok ? "rhyme" : "rhyme broken") : "";
        return cls ? `<span class="${cls}" title="${escapeHtml(r.bu)}">${escapeHtml(c)}</span>` : escapeHtml(c);
      }).join("");
      const pattern = shown[k] ? `<span class="pattern" aria-label="pattern">${escapeHtml(shown[k])}</span>` : "";
      return `<span class="text">${body}</span>${pattern}`;
    }).join("");
    const name = poem.lines.length > 1 ? `<span class="part">${["上阕", "下阕", "三阕", "四阕"][i] || ""}</span>` : "";
    return `<div class="line ci">${name}${rows}</div>`;
  });
  const box = $("poem");
  box.className = $("vertical").checked ? "vertical" : "";
  box.innerHTML = out.join("");
  const groups = [...new Set(p.groups.filter((g) => g))];
  const facts = [`词牌 ${p.cipai}`, `格 ${p.format} (${p.source})`, groups.length ? `押 ${groups.join(" → ")}` : "",
    `韵位 ${p.rhymes.filter((r) => r.ok).length}/${p.rhymes.length}`, `平仄 ${p.tones_matched}/${p.tones_checked}`];
  if (poem.acrostic) facts.push(`藏头 ${poem.acrostic}`);
  if (poem.seed !== undefined) facts.push(`seed ${poem.seed}`);
  $("info").textContent = facts.filter((f) => f).join(" · ");
  $("plan").textContent = "";
}

function render(poem, problems = []) {
  const p = poem.prosody;
  if (p.cipai) { renderCi(poem); return; }
  const broken = new Map(problems.filter((q) => q.place && q.rule !== "strict").map((q) => [`${q.line - 1}:${q.place - 1}`, q.message]));
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
      const punct = /[，。！？；、]/.test(c);
      const lastChar = k === chars.length - 1 - (/[，。！？；、]/.test(chars[chars.length - 1]) ? 1 : 0);
      const key = `${i}:${k}`;
      const cls = [rhyming.has(i) && lastChar ? "rhyme" : "", at >= 0 && k >= at && k < at + word.length ? "kw" : "",
        punct ? "" : "ch", locks.has(key) && !punct ? "locked" : "", broken.has(key) ? "broken" : ""];
      const names = cls.filter((x) => x).join(" ");
      const data = punct ? "" : ` data-line="${i}" data-place="${k}"`;
      const title = broken.has(key) ? ` title="${escapeHtml(broken.get(key))}"` : "";
      return names ? `<span class="${names}"${data}${title}>${escapeHtml(c)}</span>` : escapeHtml(c);
    }).join("");
    const tones = regular && $("marks").checked && p.actual[i]
      ? `<span class="marks" aria-label="tones">${[...p.actual[i]].map((t) => MARK[t] || t).join("")}</span>` : "";
    const alt = regular ? `<button type="button" class="alt" data-line="${i}" aria-label="other lines for line ${i + 1}">⟳</button>` : "";
    return `<div class="line"><span class="text">${body}${alt}</span>${tones}</div>`;
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
  if (poem.log_likelihood !== undefined) {
    facts.push(`log-likelihood ${poem.log_likelihood.toFixed(1)} nats (${poem.nll.toFixed(2)} a character)`);
  }
  if (poem.seed !== undefined) facts.push(`seed ${poem.seed}`);
  $("info").textContent = facts.join(" · ");
  $("plan").textContent = poem.plan
    ? "计划 plan: " + poem.plan.map((e) => `${e.line + 1} ${e.word}${e.given ? "" : "*"}`).join(" · ") + " (* chosen by the plan)"
    : "";
}

async function post(path, body) {
  const res = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await res.json();
  if (!res.ok) {
    const d = data.detail;
    throw new Error(Array.isArray(d) ? d.map((e) => `${e.loc.slice(1).join(".")}: ${e.msg}`).join("; ") : d);
  }
  return data;
}

function show(poem, problems = []) {
  if (last && last.text === poem.text) { last = poem; render(poem, problems); buttons(); return; }
  if (last) history.past.push(last);
  history.future = [];
  last = poem;
  render(poem, problems);
  buttons();
}

function buttons() {
  const regular = last && last.prosody.form && last.prosody.form !== "other";
  $("copy").disabled = !last;
  $("rewrite").disabled = !regular || locks.size === 0;
  $("undo").disabled = history.past.length === 0;
  $("redo").disabled = history.future.length === 0;
}

async function write(event, template = "") {
  if (event) event.preventDefault();
  $("error").hidden = true;
  $("write").disabled = $("another").disabled = $("rewrite").disabled = true;
  try {
    const body = request();
    if (template) Object.assign(body, { template, form: last.prosody.form, begin: "", acrostic: "", keywords: [], theme: "" });
    else locks = new Set();
    const data = await post("/v1/poems", body);
    $("alts").hidden = true;
    show(data.poems[0]);
    document.body.dataset.poems = asked;  // tests wait on this
  } catch (err) {
    $("error").textContent = err.message;
    $("error").hidden = false;
  } finally {
    $("write").disabled = false;
    $("another").disabled = last === null;
    buttons();
  }
}

// a poem of the page's own (typed, or a line swapped in) in the shape render() reads
function ownPoem(text, checked) {
  const r = checked.report;
  return { text, lines: r.lines, prosody: r, plan: null, acrostic: "", title: "", author: "" };
}

// lines as a poem: ，。 alternating (tangshi.prosody.join_lines)
const joinLines = (lines) => lines.map((l, i) => l + (i % 2 ? "。" : "，")).join("");

function templateOfLocks() {
  return joinLines(last.prosody.lines.map((line, i) => [...line].map((c, k) => (locks.has(`${i}:${k}`) ? c : "＿")).join("")));
}

async function alternatives(line) {
  $("error").hidden = true;
  const list = $("alts");
  list.innerHTML = "<li>…</li>";
  list.hidden = false;
  try {
    const data = await post("/v1/lines", { poem: last.text, line: line + 1, num: 6, seed: (Date.now() + asked++) % 2147483647 });
    list.innerHTML = data.alternatives.map((a, k) =>
      `<li><button type="button" data-k="${k}">${escapeHtml(a.line)}</button> <small>${a.log_likelihood.toFixed(1)}</small></li>`).join("");
    list.querySelectorAll("button").forEach((b) => b.addEventListener("click", async () => {
      const text = data.alternatives[Number(b.dataset.k)].poem;
      const checked = await post("/v1/check", { text, suggest: 0 });
      list.hidden = true;
      show(ownPoem(text, checked));
      document.body.dataset.swaps = String(Number(document.body.dataset.swaps || 0) + 1);
    }));
    document.body.dataset.alts = String(Number(document.body.dataset.alts || 0) + 1);  // tests wait on this
  } catch (err) {
    list.hidden = true;
    $("error").textContent = err.message;
    $("error").hidden = false;
  }
}

async function liveCheck() {
  const text = $("own").value.trim();
  const mine = ++checking;
  if (!text) { $("problems").innerHTML = ""; return; }
  try {
    const checked = await post("/v1/check", { text, suggest: 3 });
    if (mine !== checking) return;  // the person typed on
    const shown = checked.problems.filter((q) => q.rule !== "strict");
    $("problems").innerHTML = shown.length
      ? shown.map((q) => `<li>${escapeHtml(q.message)}${q.suggestions && q.suggestions.length
        ? ` — 可用 try ${escapeHtml(q.suggestions.map((x) => x.char).join("、"))}` : ""}</li>`).join("")
      : "<li class=\"ok\">合律 keeps the rules</li>";
    if (checked.report.form !== "other") {
      locks = new Set();
      show(ownPoem(joinLines(checked.report.lines), checked), checked.problems);
    }
    document.body.dataset.checks = String(mine);  // tests wait on this
  } catch (err) {
    if (mine !== checking) return;
    $("problems").innerHTML = `<li>${escapeHtml(err.message)}</li>`;
  }
}

function step(from, to) {
  if (!from.length) return;
  to.push(last);
  last = from.pop();
  render(last);
  buttons();
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
  const genres = Object.keys(models[0].genres || {});  // a model of several genres: 唐诗 宋诗 宋词
  for (const name of genres) $("genre").add(new Option(name, name));
  $("genre-field").hidden = !genres.length;
  for (const name of ["title", "theme"]) if (props[name].maxLength) $(name).maxLength = props[name].maxLength;
  const cipai = (await (await fetch("/v1/cipai")).json()).cipai;
  for (const c of cipai) $("cipais").append(new Option(c.aliases.length ? `${c.name} (${c.aliases.join("、")})` : c.name, c.name));
  document.body.dataset.ready = "1";  // tests wait on this
}

setUp().catch((err) => { $("error").textContent = `could not read the server's options: ${err.message}`; $("error").hidden = false; });
$("ask").addEventListener("submit", write);
$("another").addEventListener("click", () => write());
$("copy").addEventListener("click", copy);
$("rewrite").addEventListener("click", () => write(null, templateOfLocks()));
$("undo").addEventListener("click", () => step(history.past, history.future));
$("redo").addEventListener("click", () => step(history.future, history.past));
$("poem").addEventListener("click", (event) => {
  const alt = event.target.closest(".alt");
  if (alt) { alternatives(Number(alt.dataset.line)); return; }
  const ch = event.target.closest(".ch");
  if (!ch || !last) return;
  const key = `${ch.dataset.line}:${ch.dataset.place}`;
  if (locks.has(key)) locks.delete(key); else locks.add(key);
  ch.classList.toggle("locked", locks.has(key));
  buttons();
});
let typing = null;
$("own").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(liveCheck, 250); });
$("temperature").addEventListener("input", () => { $("tout").textContent = $("temperature").value; });
for (const id of ["vertical", "marks"]) $(id).addEventListener("change", () => last && render(last));
