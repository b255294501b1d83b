// An agent's live investigation, scripted with the official MCP SDK against the
// real `vramscope mcp --allow-trace` (real eBPF, the fake CUDA libraries): find
// the GPU process, trace it, read exact numbers while it records, stop, and the
// safety rules (disconnect stops a trace, one trace per process).
//   node live_trace_client.mjs VRAMSCOPE FIXTURE_DIR SCRATCH_DIR [stdio|http]
// Exit status 0 when every check passed; each failure is printed.
import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
  ResourceListChangedNotificationSchema,
  ResourceUpdatedNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js';

const [vramscope, fixtures, scratch, transportKind = 'stdio'] = process.argv.slice(2);
const MiB = 1024 * 1024;
let failures = 0;
const check = (what, ok, detail = '') => {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${transportKind}: ${what}${ok ? '' : ` -- ${detail}`}`);
  if (!ok) failures++;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// A process's state letter (R, S, T for stopped, ...) from /proc/PID/stat.
const processState = (pid) => readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0];

// The workload: the fixture's `serve` scenario, driven line by line.
function startWorkload() {
  const child = spawn(`${fixtures}/workload`, ['serve'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout });
  const waiting = [];
  lines.on('line', (l) => waiting.shift()?.(l));
  const command = (text) =>
    new Promise((resolve) => {
      waiting.push(resolve);
      child.stdin.write(text + '\n');
    });
  return { child, command };
}

async function connect(extraEnv, stderr = 'inherit') {
  const args = ['mcp', '--allow-trace', '--trace-dir', `${scratch}/traces`, '--nvml-lib', `${fixtures}/libnvidia-ml.so.1`];
  const client = new Client({ name: 'vramscope-live-test', version: '1.0.0' });
  if (transportKind === 'stdio') {
    const transport = new StdioClientTransport({ command: vramscope, args, env: { ...process.env, ...extraEnv }, stderr });
    await client.connect(transport);
    return { client, transport, close: () => client.close() };
  }
  // HTTP: the server runs as its own process, with a token (required with --allow-trace).
  const token = 'live-test-token-0123456789abcdef';
  const server = spawn(vramscope, [...args, '--http', '127.0.0.1:0'],
                       { env: { ...process.env, ...extraEnv, VRAMSCOPE_MCP_TOKEN: token }, stdio: ['ignore', 'ignore', 'pipe'] });
  const url = await new Promise((resolve, reject) => {
    let log = '';
    server.stderr.on('data', (d) => {
      log += d;
      process.stderr.write(d);
      const m = log.match(/serving (http:\/\/\S+)/);
      if (m) resolve(m[1]);
    });
    server.on('exit', (code) => reject(new Error(`server exited ${code}: ${log}`)));
  });
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  await client.connect(transport);
  return {
    client,
    close: async () => {
      await transport.terminateSession();  // HTTP DELETE: the session ends
      await client.close();
      return server;
    },
    server,
  };
}

const structured = (r) => r.structuredContent;
const text = (r) => r.content.map((c) => c.text ?? '').join('\n');

async function call(client, name, args = {}) {
  const r = await client.callTool({ name, arguments: args });
  if (r.isError) throw new Error(`${name} failed: ${text(r)}`);
  return r;
}

async function until(what, fn, timeoutMs = 15000) {
  const t0 = Date.now();
  let last;
  while (Date.now() - t0 < timeoutMs) {
    last = await fn();
    if (last.ok) return last;
    await sleep(200);
  }
  check(what, false, `timed out; last: ${JSON.stringify(last.value)}`);
  return last;
}

const workload = startWorkload();
const pid = workload.child.pid;
await workload.command('alloc 1 4096');  // the runtime is loaded and initialized before the trace starts
const conn = await connect({ FAKE_NVML_PID: String(pid) });
const { client } = conn;
let listChanged = 0;
const updated = [];
client.setNotificationHandler(ResourceListChangedNotificationSchema, () => listChanged++);
client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => updated.push(n.params.uri));

try {
  const tools = (await client.listTools()).tools.map((t) => t.name);
  check('tools/list has the live tools', ['gpu_processes', 'trace_start', 'trace_status', 'trace_stop', 'findings']
    .every((t) => tools.includes(t)), tools.join(','));
  check('resources.listChanged and subscribe', client.getServerCapabilities()?.resources?.listChanged === true &&
    client.getServerCapabilities()?.resources?.subscribe === true, JSON.stringify(client.getServerCapabilities()));

  // 1. Which processes use the GPU: the workload maps libcudart; the fake NVML gives it 512 MiB.
  let gp = structured(await call(client, 'gpu_processes', { limit: 200 }));
  let mine = gp.processes.find((p) => p.pid === pid);
  check('gpu_processes lists the workload', mine !== undefined, JSON.stringify(gp).slice(0, 400));
  check('gpu_processes: NVML used memory', mine?.gpu_used_bytes === 512 * MiB && mine?.gpus?.[0]?.gpu_index === 0,
        JSON.stringify(mine));
  check('gpu_processes: its CUDA libraries', mine?.cuda_libraries?.some((l) => l.includes('libcudart')), JSON.stringify(mine));
  check('gpu_processes: not traced yet', mine?.traced === false, JSON.stringify(mine));
  check('gpu_processes: not the server itself', !gp.processes.some((p) => p.cmdline.includes('--allow-trace')),
        JSON.stringify(gp.processes.map((p) => p.cmdline)));

  // 2. Attach.
  // With a progress token (the SDK sends one with onprogress), trace_start reports its steps.
  const startProgress = [];
  const startResult = await client.callTool({ name: 'trace_start', arguments: { pid, duration: 120 } }, undefined,
                                            { onprogress: (p) => startProgress.push(p.message) });
  if (startResult.isError) throw new Error(`trace_start failed: ${text(startResult)}`);
  const started = structured(startResult);
  const id = started.session_id;
  check('trace_start: progress notifications for its steps', startProgress.length >= 3 &&
        startProgress.some((m) => m?.includes('attaching')), JSON.stringify(startProgress));
  check('trace_start: recording', started.state === 'recording' && started.libraries_attached >= 1,
        JSON.stringify(started));
  const links = execFileSync('bpftool', ['link', 'list']).toString().split('\n').filter((l) => /^\d+:/.test(l));
  check('the trace holds BPF links (the check after the servers end can see them)', links.length > 0, String(links.length));
  await client.subscribeResource({ uri: `vramscope://session/${id}` });
  const resources = (await client.listResources()).resources.map((r) => r.uri);
  check('the session is a resource', resources.includes(`vramscope://session/${id}`), resources.join(','));
  const again = await client.callTool({ name: 'trace_start', arguments: { pid } });
  check('one trace per process', again.isError === true && text(again).includes('already traced'), text(again));
  gp = structured(await call(client, 'gpu_processes', { limit: 200 }));
  mine = gp.processes.find((p) => p.pid === pid);
  check('gpu_processes: now traced by the session', mine?.traced === true && mine?.session_id === id, JSON.stringify(mine));

  // 3. The program allocates while it is traced: 10 × 1 MiB kept.
  await workload.command(`alloc 10 ${MiB}`);
  await until('trace_status sees 10 MiB outstanding', async () => {
    const s = structured(await call(client, 'trace_status', { session_id: id }));
    return { ok: s.outstanding.gpu_bytes === 10 * MiB && s.outstanding.allocations === 10, value: s };
  });
  const status = structured(await call(client, 'trace_status', { session_id: id }));
  check('trace_status: per process', status.outstanding_by_process[0]?.pid === pid &&
        status.outstanding_by_process[0]?.gpu_bytes === 10 * MiB && status.calls >= 10, JSON.stringify(status));

  // 4. The analyses while it records: exact, and saying so.
  await until('outstanding_allocations (recording) sees the 10 allocations', async () => {
    const o = structured(await call(client, 'outstanding_allocations', { session_id: id }));
    const device = o.held.by_kind.find((k) => k.kind === 'device');
    return { ok: device?.count === 10 && device?.bytes === 10 * MiB && o.coverage.status === 'recording', value: o };
  });
  const timeline = await call(client, 'allocation_timeline', { session_id: id });
  check('allocation_timeline while recording', structured(timeline).coverage.status === 'recording' &&
        text(timeline).includes('still recording'), text(timeline).slice(-300));
  const findings = await call(client, 'findings', { session_id: id });
  check('findings while recording', structured(findings).coverage.status === 'recording', text(findings).slice(-300));

  // The oldest 4 kept: the 4 KiB allocated before the trace began (its free pairs with nothing) and 3 × 1 MiB.
  await workload.command('free 4');
  await until('trace_status sees 7 MiB after 4 frees', async () => {
    const s = structured(await call(client, 'trace_status', { session_id: id }));
    return { ok: s.outstanding.gpu_bytes === 7 * MiB && s.outstanding.allocations === 7, value: s.outstanding };
  });
  await sleep(1500);  // one more notification interval
  check('resources/updated notifications for the session', updated.includes(`vramscope://session/${id}`),
        JSON.stringify(updated));
  check('resources/list_changed notification', listChanged >= 1, String(listChanged));

  // 5. Stop: the session is written and its overview returned.
  const stopProgress = [];
  const stopResult = await client.callTool({ name: 'trace_stop', arguments: { session_id: id } }, undefined,
                                           { onprogress: (p) => stopProgress.push(p.message) });
  const stopped = structured(stopResult);
  check('trace_stop: progress notifications', stopProgress.length >= 1 && stopProgress[0]?.includes('stopping'),
        JSON.stringify(stopProgress));
  check('trace_stop: finished', stopped.state === 'finished' && stopped.stop_reason === 'stopped' &&
        stopped.overview?.session?.status === 'complete', JSON.stringify(stopped).slice(0, 600));
  const after = structured(await call(client, 'outstanding_allocations', { session_id: id }));
  const device = after.held.by_kind.find((k) => k.kind === 'device');
  check('outstanding_allocations after the stop: 7 × 1 MiB', device?.count === 7 && device?.bytes === 7 * MiB &&
        after.coverage.status === 'complete', JSON.stringify(after.held.by_kind));
  gp = structured(await call(client, 'gpu_processes', { limit: 200 }));
  check('gpu_processes: no longer traced', gp.processes.find((p) => p.pid === pid)?.traced === false);

  // 5b. Cancelling trace_start stops the trace it began: cancelled at its first progress step, so always
  // before the attach is done; the client never learns the session id, so nothing may keep recording.
  const controller = new AbortController();
  const outcome = await client.callTool({ name: 'trace_start', arguments: { pid, duration: 120 } }, undefined, {
    signal: controller.signal,
    onprogress: () => controller.abort(new Error('test: cancel trace_start')),
  }).then(() => 'answered', () => 'rejected');
  check('cancelled trace_start: not answered', outcome === 'rejected', outcome);
  // The client gave up at once; the server goes on until the trace is registered, then stops it.
  const newest = await until('cancelled trace_start: its session appears', async () => {
    const ids = (await client.listResources()).resources
      .map((r) => Number(r.uri.match(/^vramscope:\/\/session\/(\d+)$/)?.[1] ?? 0));
    return { ok: Math.max(...ids) > id, value: ids };
  });
  const cancelledId = Math.max(...newest.value);
  await until('cancelled trace_start: the trace stopped, reason cancelled', async () => {
    const s = structured(await call(client, 'trace_status', { session_id: cancelledId }));
    return { ok: s.state === 'finished' && s.stop_reason === 'cancelled', value: s };
  });
  gp = structured(await call(client, 'gpu_processes', { limit: 200 }));
  check('cancelled trace_start: the process is not traced', gp.processes.find((p) => p.pid === pid)?.traced === false);

  // 6. A trace left running stops when its client goes away.
  const second = structured(await call(client, 'trace_start', { pid, duration: 120 }));
  await workload.command(`alloc 1 ${MiB}`);
  await until('the second trace sees the new allocation', async () => {
    const s = structured(await call(client, 'trace_status', { session_id: second.session_id }));
    return { ok: s.outstanding.gpu_bytes === MiB, value: s.outstanding };
  });
  const server = await conn.close();
  if (server) await new Promise((r) => { server.kill('SIGTERM'); server.on('exit', r); });
  const conn2 = await connect({ FAKE_NVML_PID: String(pid) });
  const overview = structured(await call(conn2.client, 'trace_overview', { session_id: second.session_id }));
  // Ended by the server (its end written: detach_ms), not left 'recording' by a killed one (which reads as
  // 'interrupted' too, but with no detach_ms; duration_ms is never null: an unended session runs to its last call).
  check('disconnect stopped the trace and ended its session',
        overview.session.status === 'interrupted' && overview.session.detach_ms !== null, JSON.stringify(overview.session));
  const dup = structured(await call(conn2.client, 'trace_overview', { session_id: id }));
  check('sessions of earlier servers stay readable', dup.session.status === 'complete', JSON.stringify(dup.session));
  const closed = await conn2.close();
  if (closed) await new Promise((r) => { closed.kill('SIGTERM'); closed.on('exit', r); });

  // 6b. A stop signal (SIGTERM: what a desktop client sends its servers when it quits) ends the server's
  // traces with their sessions written, as a disconnect does, and the server exits 0. Over stdio the
  // server was blocked reading stdin, and the signal killed it, leaving the session unended.
  const signalled = await connect({ FAKE_NVML_PID: String(pid) }, 'pipe');
  // Over stdio the SDK keeps the child in a private field; it is read before anything can clear it.
  const serverProcess = signalled.server ?? signalled.transport._process;
  let signalledLog = '';
  serverProcess.stderr.on('data', (d) => { signalledLog += d; });
  const exited = new Promise((r) => serverProcess.on('exit', (code, signal) => r({ code, signal })));
  const third = structured(await call(signalled.client, 'trace_start', { pid, duration: 120 }));
  await workload.command(`alloc 1 ${MiB}`);
  await until('the third trace sees the new allocation', async () => {
    const s = structured(await call(signalled.client, 'trace_status', { session_id: third.session_id }));
    return { ok: s.outstanding.gpu_bytes === MiB, value: s.outstanding };
  });
  serverProcess.kill('SIGTERM');
  const exit = await Promise.race([exited, sleep(15000).then(() => ({ code: 'still running after 15 s' }))]);
  check('SIGTERM: the server exits 0', exit.code === 0, JSON.stringify(exit) + signalledLog.slice(-500));
  check('SIGTERM: the server says it stops', signalledLog.includes('stopping (SIGTERM)'), signalledLog.slice(-500));
  await signalled.client.close().catch(() => {});
  const conn3 = await connect({ FAKE_NVML_PID: String(pid) });
  const ended = structured(await call(conn3.client, 'trace_overview', { session_id: third.session_id }));
  check('SIGTERM: the trace ended with its session written',
        ended.session.detach_ms !== null && ended.coverage.calls_recorded >= 1,
        JSON.stringify({ session: ended.session, coverage: ended.coverage }));
  const closed3 = await conn3.close();
  if (closed3) await new Promise((r) => { closed3.kill('SIGTERM'); closed3.on('exit', r); });

  // 7. kill -9 of the server while the traced process is stopped in its mmap of a CUDA library not probed
  // yet (a copy of the driver): its guardian continues it. The test hook VRAMSCOPE_TEST_HOLD=cuda_mmap holds
  // the server right there. Over stdio only: there the server is this client's child, its pid known.
  if (transportKind === 'stdio') {
    const copy = `${scratch}/copied-driver`;
    mkdirSync(copy, { recursive: true });
    copyFileSync(`${fixtures}/libcuda.so.1`, `${copy}/libcuda.so.1`);
    const held = await connect({ FAKE_NVML_PID: String(pid), VRAMSCOPE_TEST_HOLD: 'cuda_mmap' }, 'pipe');
    let log = '';
    held.transport.stderr.on('data', (d) => { log += d; });
    await call(held.client, 'trace_start', { pid, duration: 120 });
    const answered = workload.command(`dlopen ${copy}/libcuda.so.1`);
    await until('the server holds in the test hook', async () =>
      ({ ok: log.includes('holding here until killed'), value: log.slice(-300) }));
    check('the workload is stopped in its mmap', processState(pid) === 'T', processState(pid));
    process.kill(held.transport.pid, 'SIGKILL');
    const reply = await Promise.race([answered, sleep(10000).then(() => 'timeout')]);
    check('kill -9 of the server: the workload was continued and went on', reply.startsWith('ok'), reply);
    if (reply === 'timeout') process.kill(pid, 'SIGKILL');  // stopped for good otherwise
    await until('the guardian says it continued the workload', async () =>
      ({ ok: log.includes(`continued pid ${pid}`), value: log.slice(-500) }));
    await held.client.close().catch(() => {});
  }
} catch (e) {
  check('no exception', false, e.stack);
  await conn.close().catch(() => {});
} finally {
  await Promise.race([workload.command('exit'), sleep(3000)]).catch(() => {});
  workload.child.stdin.end();
}
console.log(failures ? `${failures} check(s) failed` : `live tracing over ${transportKind}: every check passed`);
process.exit(failures ? 1 : 0);
