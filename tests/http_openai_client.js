// bitnetd's HTTP API driven by the official openai npm package (installed by make deps
// into build/npm): completions and chat, streaming and not, must give the texts bitnetctl
// generate gave for the same requests (files of its raw output, its final newline cut),
// and the client must see bitnetd's errors as its API errors.
//   node tests/http_openai_client.js BASE_URL API_KEY COMPLETION_FILE CHAT_FILE
const path = require("path");
const fs = require("fs");
const OpenAI = require(path.resolve(__dirname, "../build/npm/node_modules/openai"));
const [base, key, compFile, chatFile] = process.argv.slice(2);
const expect = (f) => new TextDecoder().decode(fs.readFileSync(f));
const client = new OpenAI({ baseURL: base, apiKey: key, maxRetries: 0 });
let fails = 0;
const check = (what, got, want) => {
  if (got !== want) { console.log(`FAIL: openai ${what}: ${JSON.stringify(got)} != ${JSON.stringify(want)}`); fails++; }
  else console.log(`ok: openai ${what}`);
};
(async () => {
  const models = await client.models.list();
  const model = models.data[0].id;
  const comp = { model, prompt: "Once upon a time", max_tokens: 12, temperature: 0 };
  const r = await client.completions.create(comp);
  check("completions", r.choices[0].text, expect(compFile));
  if (r.usage.completion_tokens !== 12 || r.usage.total_tokens !== r.usage.prompt_tokens + 12) {
    console.log("FAIL: openai completions usage " + JSON.stringify(r.usage)); fails++;
  }
  let t = "";
  for await (const c of await client.completions.create({ ...comp, stream: true })) t += c.choices[0].text;
  check("completions stream", t, expect(compFile));
  const chat = { model, messages: [{ role: "system", content: "Be brief" }, { role: "user", content: "Hi" }],
                 max_tokens: 6, temperature: 0 };
  const cr = await client.chat.completions.create(chat);
  check("chat", cr.choices[0].message.content, expect(chatFile));
  if (cr.choices[0].message.role !== "assistant" || cr.usage.completion_tokens !== 6) {
    console.log("FAIL: openai chat message/usage " + JSON.stringify(cr)); fails++;
  }
  t = "";
  let finish = null;
  for await (const c of await client.chat.completions.create({ ...chat, stream: true })) {
    t += c.choices[0].delta.content || "";
    finish = c.choices[0].finish_reason || finish;
  }
  check("chat stream", t, expect(chatFile));
  check("chat stream finish_reason", finish, "length");
  try {
    await client.completions.create({ ...comp, n: 2 });
    console.log("FAIL: openai n=2 accepted"); fails++;
  } catch (e) {
    check("n=2 status", e.status, 400);
    check("n=2 message", e.error && e.error.message, "only n=1 is supported");
  }
  process.exit(fails ? 1 : 0);
})().catch((e) => { console.log("FAIL: openai client: " + e); process.exit(1); });
