// Writes a vocabulary of js-tiktoken in tiktoken's own file format
// ("BASE64TOKEN RANK" lines, as cl100k_base.tiktoken), for llm_tokenizer
// and the tests.  js-tiktoken keeps its ranks as runs of base64 tokens
// with consecutive ranks ("! OFFSET TOKEN TOKEN ..." lines).
//
//   NODE_PATH=DIR/node_modules node tools/tiktoken-vocab.js \
//       [cl100k_base|o200k_base] > FILE
//
// The vocabulary is OpenAI's: it is generated (t/075-bpe.t puts it under
// build/), never kept in the repository.

'use strict';

const name = process.argv[2] || 'cl100k_base';
const ranks = require('js-tiktoken/ranks/' + name);
const bpe = (ranks.default || ranks).bpe_ranks;
const out = [];

for (const line of bpe.split('\n')) {
    if (line === '') {
        continue;
    }

    const [, offset, ...tokens] = line.split(' ');
    const base = parseInt(offset, 10);

    tokens.forEach((t, i) => out.push(t + ' ' + (base + i)));
}

process.stdout.write(out.join('\n') + '\n');
