// Motion Inversion frontend extension: a live loss curve on "Learn Motion Embedding"
// (server event "motion_inversion.loss") and a one-line summary on every node of the
// pack that reports one (ui text sent by the node after it ran).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const PREFIX = "MotionInversion_";
const LEARN = PREFIX + "LearnMotionEmbedding";
const CURVE_HEIGHT = 90;

function drawCurve(ctx, node, losses, total) {
  const width = node.size[0] - 20;
  const top = node.size[1] - CURVE_HEIGHT - 6;
  ctx.save();
  ctx.fillStyle = "#181818";
  ctx.fillRect(10, top, width, CURVE_HEIGHT);
  const values = losses.filter((v) => Number.isFinite(v) && v > 0).map((v) => Math.log10(v));
  if (values.length > 1) {
    const low = Math.min(...values), high = Math.max(...values), span = Math.max(high - low, 1e-6);
    ctx.strokeStyle = "#ffa028";
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    values.forEach((v, i) => {
      const x = 10 + (i / Math.max(total - 1, values.length - 1, 1)) * width;
      const y = top + 4 + ((high - v) / span) * (CURVE_HEIGHT - 8);
      i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
    });
    ctx.stroke();
  }
  ctx.fillStyle = "#ddd";
  ctx.font = "11px sans-serif";
  const last = losses.length ? losses[losses.length - 1].toPrecision(4) : "-";
  ctx.fillText(`step ${losses.length ? node.__miSteps : 0}/${total}  loss ${last}`, 14, top + 12);
  ctx.restore();
}

app.registerExtension({
  name: "motion_inversion.ui",
  async setup() {
    api.addEventListener("motion_inversion.loss", ({ detail }) => {
      const node = app.graph.getNodeById(Number(detail.node));
      if (!node) return;
      if (detail.step <= 1 || !node.__miLosses) node.__miLosses = [];
      node.__miLosses.push(detail.loss);
      node.__miSteps = detail.step;
      node.__miTotal = detail.total;
      if (node.size[1] < 200) node.setSize([node.size[0], node.size[1] + CURVE_HEIGHT + 10]);
      node.setDirtyCanvas(true, false);
    });
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name.startsWith(PREFIX)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = message?.text?.join("\n");
      if (!text) return;
      let widget = this.widgets?.find((w) => w.name === "summary");
      if (!widget) {
        widget = this.addWidget("text", "summary", "", () => {}, { serialize: false });
        if (widget.inputEl) widget.inputEl.readOnly = true;
      }
      widget.value = text;
      this.setDirtyCanvas(true, true);
    };
    if (nodeData.name === LEARN) {
      const onDrawForeground = nodeType.prototype.onDrawForeground;
      nodeType.prototype.onDrawForeground = function (ctx) {
        onDrawForeground?.apply(this, arguments);
        if (this.__miLosses?.length && !this.flags?.collapsed) drawCurve(ctx, this, this.__miLosses, this.__miTotal);
      };
    }
  },
});
