// The official OpenAI Node client against a running `moenav serve`: models, completions and chat
// completions, streamed and whole, compared with the greedy texts the caller computed with the
// engine; and a 400 that the client must surface as BadRequestError with the parameter named.
//
// Usage: node openai_client.mjs BASE_URL EXPECTED.json
//   EXPECTED.json: {"model", "completion": {"prompt", "max_tokens", "text"},
//                   "chat": {"messages", "max_tokens", "text"}}
// Exits 0 when everything matches, 1 on the first mismatch (with a message on stderr).
import { readFileSync } from 'node:fs';

import OpenAI from 'openai';

const [baseURL, expectedPath] = process.argv.slice(2);
if (!baseURL || !expectedPath) {
  console.error('usage: node openai_client.mjs BASE_URL EXPECTED.json');
  process.exit(2);
}
const expected = JSON.parse(readFileSync(expectedPath, 'utf8'));
const client = new OpenAI({ baseURL, apiKey: 'not-needed', maxRetries: 0, timeout: 60_000 });

function check(condition, message) {
  if (!condition) throw new Error(message);
}

function same(actual, wanted, what) {
  check(actual === wanted, `${what}: got ${JSON.stringify(actual)}, expected ${JSON.stringify(wanted)}`);
}

async function models() {
  const list = await client.models.list();
  const ids = list.data.map((model) => model.id);
  check(ids.includes(expected.model), `models.list: ${JSON.stringify(ids)} lacks ${expected.model}`);
}

async function completions() {
  const { prompt, max_tokens: maxTokens, text } = expected.completion;
  const request = { model: expected.model, prompt, max_tokens: maxTokens, temperature: 0 };
  const whole = await client.completions.create(request);
  same(whole.choices[0].text, text, 'completions (whole)');
  check(whole.usage.completion_tokens > 0, 'completions: usage.completion_tokens');
  let streamed = '';
  let finish = null;
  for await (const chunk of await client.completions.create({ ...request, stream: true })) {
    streamed += chunk.choices[0]?.text ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  same(streamed, text, 'completions (stream)');
  same(finish, whole.choices[0].finish_reason, 'completions (stream) finish_reason');
}

async function chat() {
  const { messages, max_tokens: maxTokens, text } = expected.chat;
  const request = { model: expected.model, messages, max_tokens: maxTokens, temperature: 0 };
  const whole = await client.chat.completions.create(request);
  same(whole.choices[0].message.role, 'assistant', 'chat (whole) role');
  same(whole.choices[0].message.content, text, 'chat (whole)');
  let streamed = '';
  let usage = null;
  const stream = await client.chat.completions.create({
    ...request, stream: true, stream_options: { include_usage: true },
  });
  for await (const chunk of stream) {
    streamed += chunk.choices[0]?.delta?.content ?? '';
    usage = chunk.usage ?? usage;
  }
  same(streamed, text, 'chat (stream)');
  check(usage && usage.total_tokens === whole.usage.total_tokens, `chat (stream) usage ${JSON.stringify(usage)}`);
}

async function badRequest() {
  try {
    await client.chat.completions.create({
      model: expected.model, messages: expected.chat.messages, temperature: 5,
    });
  } catch (error) {
    check(error instanceof OpenAI.BadRequestError, `expected BadRequestError, got ${error}`);
    same(error.status, 400, 'error status');
    same(error.param, 'temperature', 'error param');
    return;
  }
  throw new Error('temperature 5 was accepted');
}

try {
  await models();
  await completions();
  await chat();
  await badRequest();
  console.log('openai client: all checks passed');
} catch (error) {
  console.error(`openai client: ${error.message ?? error}`);
  process.exit(1);
}
