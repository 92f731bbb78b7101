// Compatibility check: Restate's own TypeScript ingress client (@restatedev/restate-sdk-clients,
// version pinned in package.json) against our server running tests/src/bin/compat_app.rs.
//
//   node compat.mjs http://127.0.0.1:8080      (or RESTATE_INGRESS_URL=...)
//
// Every check prints one line, "ok <name>" or "FAIL <name>" with the error and the HTTP
// exchanges of that check. The exit code is non-zero if any check failed.
//
// The client is used as published. The only addition is the `fetch` connection option (part of
// the client's public API), a pass-through to the global fetch that records each exchange for
// failure reports; it does not change what is sent or how responses are read.

import assert from "node:assert/strict";
import * as clients from "@restatedev/restate-sdk-clients";

const url = (process.argv[2] ?? process.env.RESTATE_INGRESS_URL ?? "http://127.0.0.1:8080").replace(/\/+$/, "");
const CHECK_TIMEOUT_MS = Number(process.env.COMPAT_CHECK_TIMEOUT_MS ?? 30000);
// Unique per run, so the script can be rerun against a server that keeps its data.
const run = Date.now().toString(36);

let exchanges = [];
const preview = (text) => (text.length > 500 ? `${text.slice(0, 500)}…` : text);
const bodyText = (body) => {
  if (body === undefined || body === null) return "";
  if (typeof body === "string") return body;
  return Buffer.from(body).toString("utf8");
};
async function recordingFetch(input, init = {}) {
  const entry = {
    request: `${init.method ?? "GET"} ${input}`,
    headers: init.headers,
    body: preview(bodyText(init.body)),
  };
  exchanges.push(entry);
  try {
    const response = await globalThis.fetch(input, init);
    entry.status = response.status;
    entry.responseHeaders = Object.fromEntries(response.headers.entries());
    entry.responseBody = preview(await response.clone().text());
    return response;
  } catch (e) {
    entry.error = String(e?.cause ?? e);
    throw e;
  }
}

const ingress = clients.connect({ url, fetch: recordingFetch });
const { rpc, HttpCallError } = clients;

const Greeter = { name: "Greeter" };
const Counter = { name: "Counter" };
const Signup = { name: "Signup" };
const Mailbox = { name: "Mailbox" };
const Approval = { name: "Approval" };

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const results = [];
async function check(name, body) {
  exchanges = [];
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${CHECK_TIMEOUT_MS} ms`)), CHECK_TIMEOUT_MS);
  });
  try {
    await Promise.race([body(), timeout]);
    results.push([name, true]);
    console.log(`ok   ${name}`);
  } catch (e) {
    results.push([name, false]);
    console.log(`FAIL ${name}`);
    console.log(`     error: ${e instanceof HttpCallError ? `HttpCallError status=${e.status} body=${e.responseText}` : (e?.stack ?? e)}`);
    for (const x of exchanges) {
      console.log(`     > ${x.request} headers=${JSON.stringify(x.headers)} body=${JSON.stringify(x.body)}`);
      if (x.error) console.log(`     < network error: ${x.error}`);
      else if (x.status !== undefined)
        console.log(`     < ${x.status} headers=${JSON.stringify(x.responseHeaders)} body=${JSON.stringify(x.responseBody)}`);
      else console.log("     < (no response yet)");
    }
  } finally {
    clearTimeout(timer);
  }
}

/** Awaits `promise`, expecting an HttpCallError; returns it. */
async function rejection(promise) {
  try {
    const value = await promise;
    assert.fail(`expected an error, got ${JSON.stringify(value)}`);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    assert.ok(e instanceof HttpCallError, `expected HttpCallError, got ${e?.stack ?? e}`);
    return e;
  }
}

const INVOCATION_ID = /^inv_1[0-9a-zA-Z]{33}$/;

// --- service --------------------------------------------------------------------------------

await check("service call: Greeter.greet", async () => {
  assert.equal(await ingress.serviceClient(Greeter).greet("Ada"), "Hello Ada!");
});

// --- object ---------------------------------------------------------------------------------

await check("object call: Counter.add (exclusive) and Counter.get (shared, no input)", async () => {
  const counter = ingress.objectClient(Counter, `c-${run}`);
  assert.equal(await counter.add(2), 2);
  assert.equal(await counter.add(3), 5);
  assert.equal(await counter.get(), 5);
  assert.equal(await ingress.objectClient(Counter, `other-${run}`).get(), 0);
});

await check("object call: key with '/', space and non-ASCII (client percent-encodes it)", async () => {
  const key = `a/b c ✓ ${run}`;
  assert.equal(await ingress.objectClient(Counter, key).add(7), 7);
  assert.equal(await ingress.objectClient(Counter, key).get(), 7);
});

// --- idempotent send, duplicate, attach -----------------------------------------------------

await check("send with idempotency key: Accepted, then PreviouslyAccepted on the duplicate, then attach", async () => {
  const greeter = ingress.serviceSendClient(Greeter);
  const opts = () => rpc.sendOpts({ idempotencyKey: `send-${run}` });
  const first = await greeter.greet("Bob", opts());
  assert.equal(first.status, "Accepted");
  assert.match(first.invocationId, INVOCATION_ID);
  assert.equal(first.attachable, true);
  const dup = await greeter.greet("Bob (duplicate)", opts());
  assert.equal(dup.status, "PreviouslyAccepted");
  assert.equal(dup.invocationId, first.invocationId);
  // result() = GET /restate/invocation/{id}/attach
  assert.equal(await ingress.result(first), "Hello Bob!");
  assert.equal(await ingress.result(dup), "Hello Bob!");
});

await check("send to an object with idempotency key, attach for its result", async () => {
  const sent = await ingress
    .objectSendClient(Counter, `s-${run}`)
    .add(4, rpc.sendOpts({ idempotencyKey: `obj-send-${run}` }));
  assert.equal(sent.status, "Accepted");
  assert.equal(await ingress.result(sent), 4);
  assert.equal(await ingress.objectClient(Counter, `s-${run}`).get(), 4);
});

await check("request-response call with idempotency key: the duplicate gets the first result", async () => {
  const opts = () => rpc.opts({ idempotencyKey: `call-${run}` });
  const counter = ingress.objectClient(Counter, `i-${run}`);
  assert.equal(await counter.add(10, opts()), 10);
  assert.equal(await counter.add(10, opts()), 10);
  assert.equal(await counter.get(), 10);
});

// --- workflow -------------------------------------------------------------------------------

await check("workflow: output of a never-submitted workflow is an error (404)", async () => {
  const e = await rejection(ingress.workflowClient(Signup, `never-${run}`).workflowOutput());
  assert.equal(e.status, 404);
});

await check("workflow: submit, resubmit (PreviouslyAccepted), output not ready, promise, attach, output", async () => {
  const wf = ingress.workflowClient(Signup, `ada-${run}`);
  const submission = await wf.workflowSubmit("ada@example.com");
  assert.equal(submission.status, "Accepted");
  assert.match(submission.invocationId, INVOCATION_ID);
  const again = await wf.workflowSubmit("other@example.com");
  assert.equal(again.status, "PreviouslyAccepted");
  assert.equal(again.invocationId, submission.invocationId);

  const before = await wf.workflowOutput();
  assert.equal(before.ready, false);

  const attached = wf.workflowAttach();
  attached.catch(() => {}); // awaited below
  await sleep(200);
  await wf.click("c0de"); // shared handler, resolves the "clicked" promise
  assert.equal(await attached, "ada@example.com verified with c0de");

  const after = await wf.workflowOutput();
  assert.equal(after.ready, true);
  assert.equal(after.result, "ada@example.com verified with c0de");
  // The submission is attachable by invocation id too.
  assert.equal(await ingress.result(submission), "ada@example.com verified with c0de");
});

// --- awakeable ------------------------------------------------------------------------------

await check("awakeable: resolved with resolveAwakeable, seen by the waiting handler", async () => {
  const tag = `t-${run}`;
  const sent = await ingress
    .serviceSendClient(Approval)
    .ask(tag, rpc.sendOpts({ idempotencyKey: `ask-${run}` }));
  assert.equal(sent.status, "Accepted");
  const mailbox = ingress.objectClient(Mailbox, tag);
  let id = null;
  for (let i = 0; id === null && i < 200; i++) {
    id = await mailbox.id();
    if (id === null) await sleep(50);
  }
  assert.ok(id, "the handler never published its awakeable id");
  assert.match(id, /^sign_1[A-Za-z0-9_-]+$/);
  await ingress.resolveAwakeable(id, "yes");
  assert.equal(await ingress.result(sent), `${tag}: yes`);
});

// --- ingress-private handler ----------------------------------------------------------------

await check("ingress-private handler is refused (400, not public)", async () => {
  const e = await rejection(ingress.serviceClient(Greeter).secret("Eve"));
  assert.equal(e.status, 400);
  const body = JSON.parse(e.responseText);
  assert.equal(body.message, "the invoked service is not public");
});

// --------------------------------------------------------------------------------------------

const failed = results.filter(([, ok]) => !ok).map(([name]) => name);
console.log(`${results.length - failed.length}/${results.length} checks passed`);
if (failed.length > 0) {
  console.log(`failed: ${failed.join("; ")}`);
  process.exit(1);
}
