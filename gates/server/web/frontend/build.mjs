// Copies the pinned browser libraries from node_modules into ../static/vendor.
// The server only ever serves these local copies: nothing is fetched at run time.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const vendor = join(here, "..", "static", "vendor");
const files = [
  ["uplot/dist/uPlot.iife.min.js", "uPlot.iife.min.js"],
  ["uplot/dist/uPlot.min.css", "uPlot.min.css"],
  ["uplot/LICENSE", "uPlot.LICENSE"],
];
mkdirSync(vendor, { recursive: true });
for (const [source, target] of files) {
  copyFileSync(join(here, "node_modules", source), join(vendor, target));
}
console.log(`copied ${files.length} files into ${vendor}`);
