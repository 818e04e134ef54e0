// Counts NUL-separated texts from stdin with js-tiktoken, as
// build/unit/bpe_unit count does with ours: "TOKENS CHARS" per text,
// special tokens counted as ordinary text (tiktoken's encode_ordinary).
// Run by t/075-bpe.t.
//
//   NODE_PATH=build/npm/node_modules node t/unit/tiktoken-count.js \
//       [cl100k_base] < TEXTS

'use strict';

const { getEncoding } = require('js-tiktoken');

const enc = getEncoding(process.argv[2] || 'cl100k_base');
const input = require('fs').readFileSync(0, 'utf8');
const out = [];

for (const s of input.split('\0')) {
    out.push(enc.encode(s, [], []).length + ' ' + [...s].length);
}

process.stdout.write(out.join('\n') + '\n');
