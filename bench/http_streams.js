// Time to first token and tokens/s per stream through bitnetd's HTTP API, measured from
// the client side: N concurrent streaming completions (greedy, fixed length), each timed
// from its request to its first token event and from there to its last.
//   node bench/http_streams.js URL CLIENTS [TOKENS=64] [ROUNDS=3]
// e.g. node bench/http_streams.js http://127.0.0.1:8080 4
// Prints each round's medians and the median over rounds. Figures, not assertions.
'use strict';

const [url, clientsArg, tokensArg, roundsArg] = process.argv.slice(2);
if (!url || !clientsArg) {
  console.error('usage: node bench/http_streams.js URL CLIENTS [TOKENS=64] [ROUNDS=3]');
  process.exit(2);
}
const clients = +clientsArg, tokens = +(tokensArg || 64), rounds = +(roundsArg || 3);

function median(v) {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

// One streaming completion: [seconds to the first token, tokens/s after it, tokens].
async function stream(i) {
  const t0 = performance.now();
  const res = await fetch(url + '/v1/completions', {
    method: 'POST',
    headers: {'content-type': 'application/json'},
    body: JSON.stringify({prompt: `Story number ${i} begins`, max_tokens: tokens, temperature: 0,
                          stream: true}),
  });
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  const decoder = new TextDecoder();
  let buf = '', first = 0, last = 0, n = 0;
  for await (const chunk of res.body) {
    buf += decoder.decode(chunk, {stream: true});
    let at;
    while ((at = buf.indexOf('\n\n')) >= 0) {
      const event = buf.slice(0, at);
      buf = buf.slice(at + 2);
      if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
      const j = JSON.parse(event.slice(6));
      if (j.choices && j.choices[0] && j.choices[0].text !== undefined && j.choices[0].text !== '') {
        const now = performance.now();
        if (!first) first = now;
        last = now;
        n++;
      }
    }
  }
  const ttft = (first - t0) / 1000, rate = n > 1 ? (n - 1) / ((last - first) / 1000) : 0;
  return [ttft, rate, n];
}

(async () => {
  const ttfts = [], rates = [], aggs = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    const out = await Promise.all(Array.from({length: clients}, (_, i) => stream(i)));
    const wall = (performance.now() - t0) / 1000;
    const total = out.reduce((a, o) => a + o[2], 0);
    const t = median(out.map(o => o[0])), s = median(out.map(o => o[1]));
    ttfts.push(t); rates.push(s); aggs.push(total / wall);
    console.log(`round ${r + 1}: ${clients} clients, time to first token ${t.toFixed(3)} s (median), ` +
                `${s.toFixed(2)} tok/s per stream (median), ${(total / wall).toFixed(2)} tok/s in all`);
  }
  console.log(`${clients} clients, medians of ${rounds} rounds: time to first token ` +
              `${median(ttfts).toFixed(3)} s, ${median(rates).toFixed(2)} tok/s per stream, ` +
              `${median(aggs).toFixed(2)} tok/s in all`);
})().catch(e => { console.error('http_streams: ' + e.message); process.exit(1); });
