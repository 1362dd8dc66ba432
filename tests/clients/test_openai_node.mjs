// SPDX-License-Identifier: Apache-2.0
// The official OpenAI node client (npm `openai`, pinned by scripts/fetch-openai-node.sh into
// third_party/npm-openai) against the real lychee-server's OpenAI-compatible HTTP API with the
// embedded stories260K model: models, completions and chat completions (non-streaming and
// streaming, usage), the client's typed errors (status, param, code), an aborted stream that
// the server aborts in its engine, and the API key (the server runs with --api-key). Run by CTest as `node --test` (LYCHEE_BIN_DIR names build/bin).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const clientEntry = path.join(root, 'third_party/npm-openai/node_modules/openai/index.mjs');
if (!existsSync(clientEntry)) {
  throw new Error(`${clientEntry} is missing: run scripts/fetch-openai-node.sh`);
}
const { default: OpenAI } = await import(pathToFileURL(clientEntry).href);

const binDir = process.env.LYCHEE_BIN_DIR || path.join(root, 'build/bin');
let server;
let baseURL;
let client;
let serverOutput = '';
// The server requires this key (--api-key); the client sends it as `Authorization: Bearer`.
const apiKey = 'sk-node-test-key';

// Starts lychee-server on free ports and resolves with its HTTP port once it logs it.
function startServer() {
  return new Promise((resolve, reject) => {
    server = spawn(path.join(binDir, 'lychee-server'),
                   ['--model', 'models/stories260K', '--host', '127.0.0.1', '--grpc-port', '0',
                    '--http-port', '0', '--api-key', apiKey],
                   { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${serverOutput}`)),
                             60000);
    let httpPort = 0;
    const onData = (data) => {
      serverOutput += data.toString();
      const http = serverOutput.match(/http listening on [\d.]+:(\d+)/);
      if (http) httpPort = Number(http[1]);
      // The gRPC line comes last: then the model is loaded and both ports serve.
      if (httpPort && /grpc listening on/.test(serverOutput)) {
        clearTimeout(timer);
        resolve(httpPort);
      }
    };
    server.stdout.on('data', onData);
    server.stderr.on('data', onData);
    server.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${serverOutput}`));
    });
  });
}

async function abortCount() {
  const text = await (await fetch(`${baseURL.replace(/\/v1$/, '')}/metrics`)).text();
  const m = text.match(/lychee_request_success_total\{[^}]*finished_reason="abort"[^}]*\} (\d+)/);
  return m ? Number(m[1]) : 0;
}

before(async () => {
  const port = await startServer();
  baseURL = `http://127.0.0.1:${port}/v1`;
  client = new OpenAI({ apiKey, baseURL, maxRetries: 0, timeout: 60000 });
});

after(() => {
  if (server && server.exitCode === null) server.kill('SIGKILL');
});

test('a wrong API key is the client\'s AuthenticationError (401, invalid_api_key)', async () => {
  const wrong = new OpenAI({ apiKey: 'sk-wrong', baseURL, maxRetries: 0, timeout: 60000 });
  await assert.rejects(wrong.completions.create({ prompt: 'Once', max_tokens: 2 }), (err) => {
    assert.ok(err instanceof OpenAI.AuthenticationError, String(err));
    assert.equal(err.status, 401);
    assert.equal(err.code, 'invalid_api_key');
    return true;
  });
  // Probes and /metrics stay open without a key.
  const root = baseURL.replace(/\/v1$/, '');
  assert.equal((await fetch(`${root}/health`)).status, 200);
  assert.equal((await fetch(`${root}/metrics`)).status, 200);
});

test('models.list names the served model', async () => {
  const models = await client.models.list();
  const ids = models.data.map((m) => m.id);
  assert.deepEqual(ids, ['stories260K']);
  assert.equal(models.data[0].max_model_len, 512);
});

test('completions: streamed deltas equal the non-streamed text', async () => {
  const request = { model: 'stories260K', prompt: 'Once upon a time', max_tokens: 32,
                    temperature: 0 };
  const whole = await client.completions.create(request);
  assert.equal(whole.object, 'text_completion');
  assert.ok(whole.id.startsWith('cmpl-'));
  const text = whole.choices[0].text;
  assert.ok(text.length > 0);
  assert.equal(whole.usage.total_tokens, whole.usage.prompt_tokens + whole.usage.completion_tokens);

  const stream = await client.completions.create({ ...request, stream: true,
                                                   stream_options: { include_usage: true } });
  let streamed = '';
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      streamed += choice.text;
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  assert.equal(streamed, text);
  assert.equal(finish, whole.choices[0].finish_reason);
  // cached_tokens may differ: the second run finds the first one's prompt in the prefix cache.
  assert.equal(usage.prompt_tokens, whole.usage.prompt_tokens);
  assert.equal(usage.completion_tokens, whole.usage.completion_tokens);
});

test('chat: role first, streamed content equals the non-streamed message', async () => {
  const request = { model: 'stories260K', messages: [{ role: 'user', content: 'Hello!' }],
                    max_tokens: 24, temperature: 0 };
  const whole = await client.chat.completions.create(request);
  assert.equal(whole.object, 'chat.completion');
  assert.equal(whole.choices[0].message.role, 'assistant');
  const content = whole.choices[0].message.content;
  assert.ok(content.length > 0);
  assert.equal(whole.usage.completion_tokens, 24);

  const stream = await client.chat.completions.create({ ...request, stream: true,
                                                        stream_options: { include_usage: true } });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  const streamed = chunks.flatMap((c) => c.choices).map((c) => c.delta.content ?? '').join('');
  assert.equal(streamed, content);
  assert.equal(chunks.at(-1).usage.prompt_tokens, whole.usage.prompt_tokens);
  assert.equal(chunks.at(-1).usage.completion_tokens, 24);
  assert.ok(chunks.some((c) => c.choices[0]?.finish_reason === 'length'));
});

test('chat: logprobs and the list-of-parts content form', async () => {
  const whole = await client.chat.completions.create({
    model: 'stories260K', max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 2,
    messages: [{ role: 'user', content: [{ type: 'text', text: 'Hello!' }] }],
  });
  const items = whole.choices[0].logprobs.content;
  assert.equal(items.length, 5);
  assert.equal(items.map((i) => i.token).join(''), whole.choices[0].message.content);
  for (const item of items) assert.equal(item.top_logprobs.length, 2);
});

test('policy extension: usage.policy_report of a sparse request (extra body field)', async () => {
  const prompt = 'Once upon a time, there was a little girl named Lily.' +
    ' She liked to play in the park with her friend Tom.'.repeat(12);
  const policy = { name: 'prhs', budget_tokens: 32, audit_rate: 1, prhs: { tau: 0.8 } };
  const whole = await client.completions.create({ model: 'stories260K', prompt, max_tokens: 8,
                                                  temperature: 0, policy });
  const report = whole.usage.policy_report;
  assert.equal(report.policy, 'prhs');
  assert.ok(report.audited_steps > 0);
  assert.ok(report.max_exact >= 0 && report.max_exact <= report.max_bound && report.max_bound <= 1);
  assert.ok(report.kv_read_fraction > 0 && report.kv_read_fraction <= 1);

  const stream = await client.chat.completions.create({
    model: 'stories260K', messages: [{ role: 'user', content: prompt }], max_tokens: 8,
    temperature: 0, stream: true, stream_options: { include_usage: true }, policy });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.equal(chunks.at(-1).usage.policy_report.policy, 'prhs');
  await assert.rejects(
    client.completions.create({ model: 'stories260K', prompt: 'x',
                                policy: { name: 'prhs', prhs: { tau: 2 } } }),
    (err) => err instanceof OpenAI.BadRequestError && err.param === 'policy.prhs.tau');
});

test('errors are the client\'s typed errors with status, param and code', async () => {
  await assert.rejects(
    client.completions.create({ model: 'stories260K', prompt: 'x', max_tokens: -1 }),
    (err) => err instanceof OpenAI.BadRequestError && err.status === 400 &&
             err.param === 'max_tokens' && /max_tokens/.test(err.message));
  await assert.rejects(
    client.chat.completions.create({ model: 'gpt-4', messages: [{ role: 'user', content: 'x' }] }),
    (err) => err instanceof OpenAI.NotFoundError && err.status === 404 &&
             err.code === 'model_not_found');
  await assert.rejects(
    client.chat.completions.create({ model: 'stories260K', messages: [], stream: true }),
    (err) => err instanceof OpenAI.BadRequestError && err.param === 'messages');
});

test('aborting a stream aborts the request in the engine', async () => {
  const before = await abortCount();
  const stream = await client.completions.create({
    model: 'stories260K', prompt: 'Once', max_tokens: 500, ignore_eos: true, temperature: 0,
    stream: true,
  });
  for await (const chunk of stream) {
    assert.ok(chunk.choices.length === 1);
    stream.controller.abort();
    break;
  }
  const deadline = Date.now() + 20000;
  while ((await abortCount()) <= before && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(await abortCount(), before + 1);
});
