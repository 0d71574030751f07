#!/usr/bin/env node
// ort_run.js - runs one ONNX model with ONNX Runtime (onnxruntime-node) for the benchmarks: times session creation
// and repeated runs on .npy inputs, optionally writes the outputs as .npy.
//
//   node ort_run.js MODEL.onnx --input NAME=FILE.npy ... [--threads N] [--repeat N] [--warmup N]
//                   [--loads N] [--hold] [--no-spin] [--output-dir DIR]
//
// Prints one JSON line: {"create_ms": [..one per load..], "create_cpu_ms": [..], "create_minflt": [..], "rss_before_mb",
// "rss_after_load_mb": [..], "median_ms", "p99_ms", "runs", "rss_mb"}. create_cpu_ms and create_minflt are the process's
// CPU time and minor page faults (fresh pages touched) during each create. --loads N creates the session N times; the first one is kept for the runs, the others are released
// at once unless --hold keeps them all alive (to see the memory two sessions of one model hold). --repeat 0 skips
// running. --no-spin turns off the intra-op pool's spin-waiting (session.intra_op.allow_spinning = 0), ORT's
// counterpart of OMP_WAIT_POLICY=PASSIVE.
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require(path.join(__dirname, '..', 'node_modules', 'onnxruntime-node'));

const NPY_TYPES = { '<f4': 'float32', '<f8': 'float64', '<i8': 'int64', '<i4': 'int32', '|u1': 'uint8', '|b1': 'bool' };
const ARRAYS = { float32: Float32Array, float64: Float64Array, int64: BigInt64Array, int32: Int32Array,
                 uint8: Uint8Array, bool: Uint8Array };

function readNpy(file) {
  const buf = fs.readFileSync(file);
  if (buf.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${file}: not a .npy file`);
  const major = buf[6];
  const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const hstart = major === 1 ? 10 : 12;
  const header = buf.toString('latin1', hstart, hstart + hlen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  if (/'fortran_order':\s*True/.test(header)) throw new Error(`${file}: Fortran order not supported`);
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(',').map((s) => s.trim()).filter((s) => s)
    .map(Number);
  const type = NPY_TYPES[descr];
  if (!type) throw new Error(`${file}: dtype ${descr} not supported`);
  const data = buf.subarray(hstart + hlen);
  const Arr = ARRAYS[type];
  const copy = new Uint8Array(data.length);
  copy.set(data);
  return new ort.Tensor(type, new Arr(copy.buffer, 0, data.length / Arr.BYTES_PER_ELEMENT), shape);
}

function writeNpy(file, tensor) {
  const descr = Object.keys(NPY_TYPES).find((k) => NPY_TYPES[k] === tensor.type);
  if (!descr) throw new Error(`output dtype ${tensor.type} not supported`);
  const shape = tensor.dims.length === 1 ? `(${tensor.dims[0]},)` : `(${tensor.dims.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
  header += ' '.repeat(64 - ((10 + header.length + 1) % 64)) + '\n';
  const pre = Buffer.alloc(10);
  pre.write('\x93NUMPY', 0, 'latin1');
  pre[6] = 1;
  pre[7] = 0;
  pre.writeUInt16LE(header.length, 8);
  const d = tensor.data;
  fs.writeFileSync(file, Buffer.concat([pre, Buffer.from(header, 'latin1'),
    Buffer.from(d.buffer, d.byteOffset, d.byteLength)]));
}

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}

async function main() {
  const args = process.argv.slice(2);
  const opt = { threads: 2, repeat: 20, warmup: 3, loads: 1, hold: false, spin: true, inputs: {}, outdir: null,
                model: null };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--input') {
      const [name, file] = args[++i].split(/=(.*)/s);
      opt.inputs[name] = readNpy(file);
    } else if (a === '--threads') opt.threads = Number(args[++i]);
    else if (a === '--repeat') opt.repeat = Number(args[++i]);
    else if (a === '--warmup') opt.warmup = Number(args[++i]);
    else if (a === '--loads') opt.loads = Number(args[++i]);
    else if (a === '--hold') opt.hold = true;
    else if (a === '--no-spin') opt.spin = false;
    else if (a === '--output-dir') opt.outdir = args[++i];
    else if (!opt.model) opt.model = a;
    else throw new Error(`unexpected argument ${a}`);
  }
  if (!opt.model) throw new Error('usage: ort_run.js MODEL.onnx --input NAME=FILE.npy ...');
  const sessOpts = { intraOpNumThreads: opt.threads, interOpNumThreads: 1, executionMode: 'sequential',
                     graphOptimizationLevel: 'all', executionProviders: ['cpu'] };
  if (!opt.spin) sessOpts.extra = { session: { intra_op: { allow_spinning: '0' } } };
  const rssBefore = process.memoryUsage().rss / 1048576;
  const createMs = [];
  const createCpuMs = [];
  const createMinflt = [];
  const rssAfter = [];
  const held = [];
  let session = null;
  for (let i = 0; i < Math.max(1, opt.loads); i++) {
    const u0 = process.resourceUsage();
    const t0 = process.hrtime.bigint();
    const s = await ort.InferenceSession.create(opt.model, sessOpts);
    createMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
    const u1 = process.resourceUsage();
    createCpuMs.push((u1.userCPUTime + u1.systemCPUTime - u0.userCPUTime - u0.systemCPUTime) / 1000);
    createMinflt.push(u1.minorPageFault - u0.minorPageFault);
    if (session === null) session = s;
    else if (opt.hold) held.push(s);
    else await s.release();
    rssAfter.push(process.memoryUsage().rss / 1048576);
  }
  const result = { create_ms: createMs, create_cpu_ms: createCpuMs, create_minflt: createMinflt, rss_before_mb: rssBefore, rss_after_load_mb: rssAfter, runs: 0 };
  if (opt.repeat > 0) {
    let out = null;
    for (let i = 0; i < opt.warmup; i++) out = await session.run(opt.inputs);
    const times = [];
    for (let i = 0; i < opt.repeat; i++) {
      const t0 = process.hrtime.bigint();
      out = await session.run(opt.inputs);
      times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    times.sort((a, b) => a - b);
    result.median_ms = quantile(times, 0.5);
    result.p99_ms = quantile(times, 0.99);
    result.runs = times.length;
    if (opt.outdir) {
      fs.mkdirSync(opt.outdir, { recursive: true });
      for (const [name, t] of Object.entries(out)) {
        writeNpy(path.join(opt.outdir, name.replace(/[^A-Za-z0-9._-]/g, '_') + '.npy'), t);
      }
    }
  }
  result.rss_mb = process.memoryUsage().rss / 1048576;
  console.log(JSON.stringify(result));
}

main().catch((e) => {
  console.error(`ort_run: ${e.message}`);
  process.exit(1);
});
