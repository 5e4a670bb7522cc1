// Validates an AsyncAPI document with the reference parser; exits non-zero on any error or
// warning, printing each with its path. Usage: node validate.mjs ../asyncapi.yaml
import { Parser, fromFile } from '@asyncapi/parser';

const file = process.argv[2];
if (!file) {
  console.error('usage: node validate.mjs <asyncapi.yaml>');
  process.exit(2);
}
const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, file).parse();
// Severity 0 = error, 1 = warning; hints and information (2, 3) are style advice.
const problems = diagnostics.filter((d) => d.severity <= 1);
for (const d of problems) {
  console.error(`${d.severity === 0 ? 'error' : 'warning'} ${d.code} at ${d.path.join('.')}: ${d.message}`);
}
if (!document || problems.length > 0) {
  console.error(`${file}: ${problems.length} problem(s)`);
  process.exit(1);
}
const channels = document.channels().length;
const messages = document.components().messages().length;
console.log(`${file}: valid AsyncAPI ${document.version()} (${channels} channels, ${messages} messages)`);
