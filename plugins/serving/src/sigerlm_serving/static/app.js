// The SigerLM web page: chat with streaming replies (the session survives reloads) and, when
// the Lampung plugin adds /v1/translate, a translate panel. Plain JavaScript, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const SESSION_KEY = "siger.session";
const API_KEY = "siger.apiKey";
let controller = null;

function headers(json = true) {
  const h = json ? { "Content-Type": "application/json" } : {};
  const key = localStorage.getItem(API_KEY);
  if (key) h["X-Siger-API-Key"] = key;
  return h;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(options.body !== undefined), ...(options.headers || {}) } });
  if (response.status === 401) {
    $("key-label").hidden = false;
    setStatus("This server needs an API key: enter it above.");
  }
  return response;
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error) return `${body.error.message} (${body.error.code})`;
  } catch (_) { /* not JSON */ }
  return `HTTP ${response.status}`;
}

function setStatus(text) { $("status").textContent = text; }

function addMessage(role, text) {
  const li = document.createElement("li");
  li.className = role;
  li.textContent = text;
  $("messages").appendChild(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) yield { event, data: data === "[DONE]" ? data : JSON.parse(data) };
    }
  }
}

async function loadSession() {
  const id = localStorage.getItem(SESSION_KEY);
  if (!id) return;
  const response = await api(`/v1/sessions/${encodeURIComponent(id)}`);
  if (response.status === 404) { localStorage.removeItem(SESSION_KEY); return; }
  if (!response.ok) return;
  const session = await response.json();
  $("messages").textContent = "";
  for (const m of session.messages) addMessage(m.role, m.content);
}

function busy(on) {
  $("send").disabled = on;
  $("stop").hidden = !on;
}

async function send(event) {
  event.preventDefault();
  const text = $("input").value.trim();
  if (!text || controller) return;
  $("input").value = "";
  addMessage("user", text);
  const reply = addMessage("assistant", "");
  const body = { message: text, stream: true, temperature: Number($("temperature").value) || 0,
                 max_new_tokens: Number($("max-tokens").value) || 128 };
  const sid = localStorage.getItem(SESSION_KEY);
  if (sid) body.session_id = sid;
  controller = new AbortController();
  busy(true);
  try {
    let response = await api("/v1/chat", { method: "POST", body: JSON.stringify(body), signal: controller.signal });
    if (response.status === 404 && sid) {  // the session is gone (deleted): start a new one
      localStorage.removeItem(SESSION_KEY);
      delete body.session_id;
      response = await api("/v1/chat", { method: "POST", body: JSON.stringify(body), signal: controller.signal });
    }
    if (!response.ok) throw new Error(await errorText(response));
    for await (const { event, data } of sseEvents(response)) {
      if (event === "start") localStorage.setItem(SESSION_KEY, data.session_id);
      else if (event === "delta") { reply.textContent += data.text; reply.scrollIntoView({ block: "end" }); }
      else if (event === "done") { reply.textContent = data.text; setStatus(`${data.usage.completion_tokens} tokens, ${data.finish_reason}`); }
      else if (event === "error") throw new Error(data.error.message);
    }
  } catch (err) {
    if (err.name === "AbortError") setStatus("stopped");
    else { reply.className = "error"; reply.textContent = String(err.message || err); }
  } finally {
    controller = null;
    busy(false);
    $("input").focus();
  }
}

function newChat() {
  if (controller) controller.abort();
  localStorage.removeItem(SESSION_KEY);
  $("messages").textContent = "";
  setStatus("new chat");
}

// -- translate (shown only when a plugin serves /v1/translate) ----------------------------------
let translateSpec = null;

function resolve(schema, spec) {
  while (schema && schema.$ref) schema = spec.components.schemas[schema.$ref.split("/").pop()];
  if (schema && schema.allOf && schema.allOf.length === 1) return resolve(schema.allOf[0], spec);
  return schema || {};
}

function enumOf(schema, spec) {
  schema = resolve(schema, spec);
  if (schema.enum) return schema.enum;
  for (const alt of schema.anyOf || schema.oneOf || []) { const e = enumOf(alt, spec); if (e) return e; }
  return null;
}

async function setupTranslate() {
  const response = await fetch("/openapi.json");
  if (!response.ok) return;
  const spec = await response.json();
  const op = spec.paths && spec.paths["/v1/translate"] && spec.paths["/v1/translate"].post;
  if (!op) return;
  const body = resolve(op.requestBody.content["application/json"].schema, spec);
  const props = body.properties || {};
  let textField = null, textIsList = false, dirField = null, dirValues = null;
  for (const [name, raw] of Object.entries(props)) {
    const s = resolve(raw, spec);
    const values = enumOf(raw, spec);
    if (values && !dirField) { dirField = name; dirValues = values; continue; }
    if (!textField && (s.type === "array" || (s.anyOf || []).some((a) => a.type === "array"))) { textField = name; textIsList = true; }
    else if (!textField && s.type === "string" && /text|source|input|sentence/i.test(name)) textField = name;
  }
  if (!textField) return;
  translateSpec = { textField, textIsList, dirField };
  const select = $("translate-direction");
  if (dirField) {
    for (const v of dirValues) { const o = document.createElement("option"); o.value = o.textContent = v; select.appendChild(o); }
  } else select.parentElement.hidden = true;
  $("translate-panel").hidden = false;
}

function translationText(item) {
  if (typeof item === "string") return { text: item, meta: "" };
  const text = item.translation ?? item.text ?? item.output ?? item.target ?? JSON.stringify(item);
  const meta = [item.stage && `stage ${item.stage}`, item.confidence != null && `confidence ${Number(item.confidence).toFixed(2)}`]
    .filter(Boolean).join(", ");
  return { text, meta };
}

async function translate(event) {
  event.preventDefault();
  const lines = $("translate-input").value.split("\n").map((l) => l.trim()).filter(Boolean);
  if (!lines.length || !translateSpec) return;
  const body = { [translateSpec.textField]: translateSpec.textIsList ? lines : lines.join("\n") };
  if (translateSpec.dirField) body[translateSpec.dirField] = $("translate-direction").value;
  const out = $("translations");
  out.textContent = "";
  const response = await api("/v1/translate", { method: "POST", body: JSON.stringify(body) });
  if (!response.ok) { const li = document.createElement("li"); li.textContent = await errorText(response); out.appendChild(li); return; }
  const data = await response.json();
  const items = Array.isArray(data) ? data : (Object.values(data).find(Array.isArray) || [data]);
  for (const item of items) {
    const { text, meta } = translationText(item);
    const li = document.createElement("li");
    li.textContent = text;
    if (meta) { const m = document.createElement("div"); m.className = "meta"; m.textContent = meta; li.appendChild(m); }
    out.appendChild(li);
  }
}

async function init() {
  $("api-key").value = localStorage.getItem(API_KEY) || "";
  $("api-key").addEventListener("change", () => { localStorage.setItem(API_KEY, $("api-key").value.trim()); loadSession(); });
  $("chat-form").addEventListener("submit", send);
  $("input").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) send(e); });
  $("new-chat").addEventListener("click", newChat);
  $("stop").addEventListener("click", () => controller && controller.abort());
  $("translate-form").addEventListener("submit", translate);
  try {
    const health = await (await fetch("/health")).json();
    $("model").textContent = health.model;
    document.title = health.model;
    setStatus("ready");
  } catch (_) { setStatus("the server does not answer"); }
  await loadSession();
  await setupTranslate();
}

document.addEventListener("DOMContentLoaded", init);
