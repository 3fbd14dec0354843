// A Vite plugin that writes `sources.json` beside the built files: a SHA-256 over the app's
// sources, which tests/test_apps_build.py recomputes to fail when the committed build is
// stale. The files hashed: index.html, package.json, package-lock.json, tsconfig.json,
// vite.config.ts and everything under src/ (paths relative to the app, sorted, "/"-joined).
// digest = sha256 over "<path>\0<sha256 hex of the file's bytes>\n" for each file in order.
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative, sep } from "node:path";

const TOP = ["index.html", "package.json", "package-lock.json", "tsconfig.json", "vite.config.ts"];

function walk(dir, out) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path, out);
    else out.push(path);
  }
}

export function sourceFiles(root) {
  const files = TOP.map((name) => join(root, name)).filter((p) => existsSync(p));
  walk(join(root, "src"), files);
  return files.map((p) => relative(root, p).split(sep).join("/")).sort();
}

export function sourcesDigest(root) {
  const whole = createHash("sha256");
  for (const path of sourceFiles(root)) {
    const file = createHash("sha256").update(readFileSync(join(root, path))).digest("hex");
    whole.update(`${path}\0${file}\n`);
  }
  return whole.digest("hex");
}

export function sourcesManifest(name) {
  return {
    name: "cmfhir-sources-manifest",
    apply: "build",
    generateBundle() {
      const root = process.cwd();
      this.emitFile({
        type: "asset",
        fileName: "sources.json",
        source: JSON.stringify({ app: name, sources_sha256: sourcesDigest(root) }, null, 2) + "\n",
      });
    },
  };
}
