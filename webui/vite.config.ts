// The workbench's bundle: served by Verdict under /workbench/ from the
// files embedded in its binary (workbench/src/assets.rs).
import { defineConfig } from "vite";

export default defineConfig({
  base: "/workbench/",
  build: {
    outDir: "dist",
    assetsDir: "assets",
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 1500,
  },
});
