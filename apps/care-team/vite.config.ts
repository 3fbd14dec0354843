import { defineConfig } from "vite";
// @ts-expect-error: a plain JavaScript module shared by the apps (no type declarations)
import { sourcesManifest } from "../sources-manifest.mjs";

// Built into the Python package, served by cmfhir at /apps/care-team/ (routes/apps.py).
export default defineConfig({
  base: "/apps/care-team/",
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    outDir: "../../src/cmfhir/static/apps/care-team",
    emptyOutDir: true,
    sourcemap: false,
    // Everything in files of its own (no inline scripts or styles: the page's CSP forbids them).
    assetsInlineLimit: 0,
  },
  plugins: [sourcesManifest("care-team")],
});
