// Drives ComfyUI's real frontend in Debian's headless Chromium for tests/test_browser.py.
// Usage: node run_workflows.mjs <config.json>; writes the findings as JSON to config.result.
// Config: url, chromium, out (screenshot folder), workflows [{name, path}], runs [{name,
// learnSteps, samplerSteps, timeoutS}] (queued one after the other). Only 127.0.0.1 is reachable: other requests are aborted.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const PACK_SCRIPT = "motion_inversion.js";
const LEARN = "MotionInversion_LearnMotionEmbedding";
const SCORE = "MotionInversion_MotionFidelityScore";
const result = { errors: [], packErrors: [], blocked: [], extensionLoaded: false, workflows: {}, runs: {} };

// A fresh profile folder (config.profile) per run; playwright passes it as --user-data-dir.
const context = await chromium.launchPersistentContext(config.profile, {
  executablePath: config.chromium,
  headless: true,
  viewport: { width: 2000, height: 1250 },
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const page = context.pages()[0] || await context.newPage();
await page.route("**/*", (route) => {
  const url = new URL(route.request().url());
  if (url.hostname === "127.0.0.1" || url.protocol === "data:" || url.protocol === "blob:") return route.continue();
  result.blocked.push(url.href);
  return route.abort();
});
const noteError = (text, where) => {
  const entry = `${where}: ${text}`;
  result.errors.push(entry);
  if (entry.includes(PACK_SCRIPT) || entry.toLowerCase().includes("motion_inversion")) result.packErrors.push(entry);
};
page.on("pageerror", (error) => noteError(`${error.message}\n${error.stack || ""}`, "pageerror"));
page.on("console", (message) => {
  if (message.type() !== "error") return;
  const where = message.location()?.url || "";
  noteError(`${message.text()} (${where})`, "console");
});
page.on("response", (response) => {
  if (response.url().endsWith(`/${PACK_SCRIPT}`)) result.extensionLoaded = response.ok();
});

// Fit the whole graph into the view, so a screenshot shows every node.
const fitView = () => page.evaluate(() => {
  const canvas = window.app.canvas, nodes = window.app.graph.nodes;
  const x0 = Math.min(...nodes.map((n) => n.pos[0])), y0 = Math.min(...nodes.map((n) => n.pos[1] - 30));
  const x1 = Math.max(...nodes.map((n) => n.pos[0] + n.size[0])), y1 = Math.max(...nodes.map((n) => n.pos[1] + n.size[1]));
  const width = canvas.canvas.clientWidth, height = canvas.canvas.clientHeight;
  const scale = Math.min(width / (x1 - x0 + 80), height / (y1 - y0 + 80), 1.2);
  canvas.ds.scale = scale;
  canvas.ds.offset = [-x0 + 40 / scale + (width / scale - (x1 - x0 + 80)) / 2, -y0 + 40 / scale];
  canvas.setDirty(true, true);
  canvas.draw(true, true);
});

// Zoom onto one node (for the Learn node's curve and summary).
const focusNode = (id) => page.evaluate((id) => {
  const canvas = window.app.canvas, node = window.app.graph.getNodeById(id);
  const width = canvas.canvas.clientWidth, height = canvas.canvas.clientHeight;
  const scale = Math.min(width / (node.size[0] + 100), height / (node.size[1] + 120), 2);
  canvas.ds.scale = scale;
  canvas.ds.offset = [-node.pos[0] + 50 / scale, -node.pos[1] + 60 / scale];
  canvas.setDirty(true, true);
  canvas.draw(true, true);
}, id);

// Orange curve pixels (#ffa028) inside the Learn node's box on the canvas.
const curvePixels = (id) => page.evaluate((id) => {
  const canvas = window.app.canvas, node = window.app.graph.getNodeById(id);
  canvas.draw(true, true);
  const ratio = canvas.canvas.width / canvas.canvas.clientWidth;
  const [x, y] = canvas.ds.convertOffsetToCanvas([node.pos[0], node.pos[1]]);
  const w = node.size[0] * canvas.ds.scale, h = node.size[1] * canvas.ds.scale;
  const data = canvas.canvas.getContext("2d").getImageData(x * ratio, y * ratio, w * ratio, h * ratio).data;
  let count = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (Math.abs(data[i] - 255) < 30 && Math.abs(data[i + 1] - 160) < 30 && Math.abs(data[i + 2] - 40) < 30) count++;
  }
  return count;
}, id);

const dialogs = () => page.evaluate(() =>
  [...document.querySelectorAll(".p-dialog")].filter((d) => d.offsetParent !== null).map((d) => d.innerText.slice(0, 800)));

const closeDialogs = async () => {
  for (let i = 0; i < 4 && (await dialogs()).length; i++) {
    const close = page.locator(".p-dialog button[aria-label='Close'], .p-dialog .p-dialog-close-button").first();
    if (await close.count()) await close.click({ timeout: 5000 }).catch(() => page.keyboard.press("Escape"));
    else await page.keyboard.press("Escape");
    await page.waitForTimeout(300);
  }
};

try {
  await page.goto(config.url, { waitUntil: "domcontentloaded", timeout: 120_000 });
  await page.waitForFunction(() => window.app?.graph && window.app.canvas && window.comfyAPI?.api?.api, null,
                             { timeout: 120_000 });
  await page.waitForTimeout(1000);
  await closeDialogs();
  for (const workflow of config.workflows) {
    const json = JSON.parse(readFileSync(workflow.path, "utf8"));
    const errorsBefore = result.errors.length;
    await page.evaluate(async ([json, name]) => { await window.app.loadGraphData(json, true, true, name); },
                        [json, workflow.name]);
    await page.waitForTimeout(500);
    const found = await page.evaluate(() => window.app.graph.nodes.map((n) => ({
      id: n.id, type: n.type, hasErrors: !!n.has_errors, registered: n.constructor?.type === n.type
        || n.constructor?.comfyClass === n.type, color: n.color || null, bgcolor: n.bgcolor || null,
      // combo values the server does not offer: files this ComfyUI lacks (a model to download,
      // an embedding still to learn); frontend 1.49 marks such nodes with errors on load
      missing: (n.widgets || []).filter((w) => Array.isArray(w.options?.values) && !w.options.values.includes(w.value))
        .map((w) => `${w.name}=${w.value}`),
    })));
    const shownDialogs = await dialogs();
    await closeDialogs();
    // Frontend 1.49 reports missing files in an error toast whose "View details" opens a panel
    // (1.27 opens a Missing Models dialog): read what that panel tells the user.
    const details = page.getByRole("button", { name: "View details" }).first();
    if (await details.count() && await details.isVisible()) {
      await details.click({ timeout: 5000 }).catch(() => {});
      await page.waitForTimeout(800);
      await page.screenshot({ path: join(config.out, `details_${workflow.name.replace(/\.json$/, "")}.png`) });
      shownDialogs.push(await page.evaluate(() => document.body.innerText.split("\n")
        .filter((line) => /safetensors|missing|download/i.test(line)).join("\n").slice(0, 600)));
      await page.keyboard.press("Escape");
      await closeDialogs();
    }
    await fitView();
    const shot = join(config.out, `workflow_${workflow.name.replace(/\.json$/, "")}.png`);
    await page.screenshot({ path: shot });
    result.workflows[workflow.name] = { nodes: found, dialogs: shownDialogs, screenshot: shot,
                                        errors: result.errors.slice(errorsBefore) };
  }

  for (const spec of config.runs || []) {
    const stem = spec.name.replace(/\.json$/, "");
    const run = { name: spec.name, curveSeen: 0, lossesSeen: 0, screenshots: [] };
    result.runs[spec.name] = run;
    const json = JSON.parse(readFileSync(config.workflows.find((w) => w.name === spec.name).path, "utf8"));
    await page.evaluate(async ([json, name]) => { await window.app.loadGraphData(json, true, true, name); },
                        [json, spec.name]);
    const ids = await page.evaluate(([learnType, scoreType, learnSteps, samplerSteps]) => {
      const nodes = window.app.graph.nodes;
      const learn = nodes.find((n) => n.type === learnType), score = nodes.find((n) => n.type === scoreType);
      learn.widgets.find((w) => w.name === "steps").value = learnSteps;
      for (const n of nodes.filter((n) => ["KarrasScheduler", "BasicScheduler"].includes(n.type))) {
        n.widgets.find((w) => w.name === "steps").value = samplerSteps;
      }
      return { learn: learn.id, score: score.id };
    }, [LEARN, SCORE, spec.learnSteps, spec.samplerSteps]);
    run.learnNode = ids.learn;
    await focusNode(ids.learn);
    const historyBefore = await page.evaluate(async () => Object.keys(await (await fetch("/api/history")).json()));
    const started = Date.now();
    await page.evaluate(() => window.app.queuePrompt(0, 1));
    const deadline = started + spec.timeoutS * 1000;
    let queue = null;
    // While Learn runs: the extension's losses grow and the curve is drawn on the node.
    while (Date.now() < deadline) {
      await page.waitForTimeout(400);
      const losses = await page.evaluate((id) => window.app.graph.getNodeById(id).__miLosses?.length || 0, ids.learn);
      if (losses > 1 && losses < spec.learnSteps && !run.curveSeen) {
        run.lossesSeen = losses;
        run.curveSeen = await curvePixels(ids.learn);
        const shot = join(config.out, `learning_${stem}.png`);
        await page.screenshot({ path: shot });
        run.screenshots.push(shot);
      }
      queue = await page.evaluate(async () => (await (await fetch("/api/queue")).json()));
      if (Date.now() - started > 3000 && !queue.queue_running.length && !queue.queue_pending.length) break;
    }
    run.seconds = (Date.now() - started) / 1000;
    run.finished = !!queue && !queue.queue_running.length && !queue.queue_pending.length;
    await page.waitForTimeout(800);
    const after = await page.evaluate(([learn, score]) => {
      const text = (id) => window.app.graph.getNodeById(id).widgets?.find((w) => w.name === "summary")?.value || "";
      const node = window.app.graph.getNodeById(learn);
      const widgets = node.widgets.map((w) => ({
        name: w.name, y: w.y ?? w.last_y,
        height: w.computedHeight ?? (w.computeSize ? w.computeSize(node.size[0])[1] : window.LiteGraph?.NODE_WIDGET_HEIGHT ?? 20),
      }));
      return { learnSummary: text(learn), scoreSummary: text(score), losses: node.__miLosses?.length || 0,
               learnSize: [...node.size], learnWidgets: widgets };
    }, [ids.learn, ids.score]);
    Object.assign(run, after);
    const history = await page.evaluate(async () => (await (await fetch("/api/history")).json()));
    run.history = Object.fromEntries(Object.entries(history).filter(([id]) => !historyBefore.includes(id)));
    await focusNode(ids.learn);
    run.curveAfter = await curvePixels(ids.learn);
    const shot = join(config.out, `learn_node_after_${stem}.png`);
    await page.screenshot({ path: shot });
    run.screenshots.push(shot);
    await fitView();
    const whole = join(config.out, `${stem}_after_run.png`);
    await page.screenshot({ path: whole });
    run.screenshots.push(whole);
    run.dialogs = await dialogs();
  }
} catch (error) {
  result.failure = `${error.message}\n${error.stack || ""}`;
} finally {
  writeFileSync(config.result, JSON.stringify(result, null, 1));
  await context.close();
}
