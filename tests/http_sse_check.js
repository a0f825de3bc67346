// Checks a server-sent event stream of bitnetd's HTTP API byte for byte (tests/t_http.sh):
// every event is exactly "data: {json}\n\n", the last "data: [DONE]\n\n", nothing else;
// every chunk has the same id, object and model; only the last JSON chunk has a finish
// reason and usage. Prints the text the chunks carry (for comparing), then on stderr
// "events N" (chunks with text) and "usage P C"; exits 1 on the first violation.
//   node tests/http_sse_check.js FILE chat|completions
const fs = require("fs");
const [file, kind] = process.argv.slice(2);
const raw = fs.readFileSync(file);
const s = raw.toString("utf8");
const die = (m) => { console.error("SSE: " + m); process.exit(1); };
if (!Buffer.from(s, "utf8").equals(raw)) die("the stream is not valid UTF-8");
if (!s.endsWith("data: [DONE]\n\n")) die("does not end with data: [DONE]\\n\\n: " + JSON.stringify(s.slice(-40)));
const body = s.slice(0, -"data: [DONE]\n\n".length);
if (!body.endsWith("\n\n")) die("the last chunk does not end with \\n\\n");
const events = body.slice(0, -2).split("\n\n");
const object = kind === "chat" ? "chat.completion.chunk" : "text_completion";
let text = "", id = null, n_text = 0, usage = null;
events.forEach((ev, i) => {
  if (!ev.startsWith("data: ")) die(`event ${i} does not start with "data: ": ${JSON.stringify(ev.slice(0, 40))}`);
  if (ev.includes("\n")) die(`event ${i} spans lines`);
  let c;
  try { c = JSON.parse(ev.slice(6)); } catch (e) { die(`event ${i} is not JSON: ${ev}`); }
  if (c.object !== object) die(`event ${i}: object ${c.object}`);
  if (id === null) id = c.id;
  if (c.id !== id || typeof c.model !== "string" || !Number.isInteger(c.created)) die(`event ${i}: id/model/created`);
  if (!Array.isArray(c.choices) || c.choices.length !== 1 || c.choices[0].index !== 0) die(`event ${i}: choices`);
  const ch = c.choices[0], last = i === events.length - 1;
  if (last !== (ch.finish_reason !== null)) die(`event ${i}: finish_reason ${ch.finish_reason} (last: ${last})`);
  if (last !== (c.usage !== undefined)) die(`event ${i}: usage where it should${last ? "" : " not"} be`);
  const t = kind === "chat" ? ch.delta.content : ch.text;
  if (kind === "chat" && (i === 0) !== (ch.delta.role === "assistant")) die(`event ${i}: role`);
  if (!last && (typeof t !== "string" || t.length === 0)) die(`event ${i}: a chunk without text`);
  if (last && t) die("the last chunk carries text");
  if (!last) { text += t; n_text++; }
  if (last) usage = c.usage;
});
if (!usage || usage.total_tokens !== usage.prompt_tokens + usage.completion_tokens) die("usage " + JSON.stringify(usage));
process.stdout.write(text);
console.error(`events ${n_text}\nusage ${usage.prompt_tokens} ${usage.completion_tokens}`);
