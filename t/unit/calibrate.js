// Counts real tokens of t/unit/samples/* with cl100k_base and o200k_base,
// the reference for t/unit/samples.counts and docs/tokens.md.
//
//   mkdir -p /tmp/tok && cd /tmp/tok && npm install js-tiktoken
//   NODE_PATH=/tmp/tok/node_modules node t/unit/calibrate.js t/unit/samples/*
//
// Nothing of the tokenizer is kept in the repository.

'use strict';

const fs = require('fs');
const path = require('path');
const { getEncoding } = require('js-tiktoken');

const cl = getEncoding('cl100k_base');
const o2 = getEncoding('o200k_base');

for (const f of process.argv.slice(2)) {
    const s = fs.readFileSync(f, 'utf8');
    console.log(path.basename(f), [...s].length, cl.encode(s).length,
                o2.encode(s).length);
}
