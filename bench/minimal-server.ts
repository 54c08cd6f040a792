/**
 * A reference point for bench/inference.ts, not a product server: `/invocations` reduced to the work every
 * request needs — read the body, parse the JSON, coerce the row, apply the fitted transform, score with ONNX
 * Runtime through the same micro-batcher, write the JSON answer with the same headers — and nothing else (no
 * routing, versions, limits, metrics, capture, error answers or shutdown). The gap between this server and the
 * bare node:http ceiling is the cost of the request's own work on this machine; the gap between this server and
 * the real one is what Kiln's serving features cost.
 *
 * `node --import tsx bench/minimal-server.ts <port> <model dir>` (model.onnx + transform.json, as the container).
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { applyTransformToInputs, coerceRowInputs, type InputValues } from '../lib/core/transform.ts';
import { OnnxModel } from '../lib/ml/onnx-model.ts';
import { MicroBatcher } from '../lib/serving/batcher.ts';
import { DirectoryModelSource } from '../lib/serving/model-source.ts';
import { parseInvocationBody, predictionsJsonOf } from '../lib/serving/sagemaker.ts';

const [portArg, dir] = process.argv.slice(2);
if (portArg === undefined || dir === undefined) {
  throw new Error('usage: minimal-server.ts <port> <model dir>');
}
const bundle = await new DirectoryModelSource({ dir, name: 'spam' }).load('spam');
const model = await OnnxModel.load(bundle.onnx, { provider: 'cpu', intraOpNumThreads: 1 });
const transform = bundle.transform;
const batcher = new MicroBatcher<InputValues>((rows) => {
  const { features, nRows } = applyTransformToInputs(transform, rows);
  return model.run(features, nRows);
});

http
  .createServer((req, res) => {
    if (req.url === '/ping') {
      res.writeHead(200, { 'content-length': 0 });
      res.end();
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const raw = parseInvocationBody(
        Buffer.concat(chunks),
        req.headers['content-type'],
        transform.inputs,
        transform.target,
        10_000,
      );
      const rows = raw.map((row) => coerceRowInputs(transform, row));
      void batcher.submit(rows).then((output) => {
        const body = predictionsJsonOf(output, model.classes);
        res.writeHead(200, {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          'x-kiln-request-id': randomUUID(),
          'x-kiln-model': bundle.name,
          'x-kiln-model-version': bundle.version,
        });
        res.end(body);
      });
    });
  })
  .listen(Number(portArg), '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
