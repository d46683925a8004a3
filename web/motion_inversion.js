// Motion Inversion frontend extension: a live loss curve on "Learn Motion Embedding"
// (server event "motion_inversion.loss") and a one-line summary on every node of the
// pack that reports one (ui text sent by the node after it ran).
// The curve is a widget of its own, so the node's layout gives it a slot of its own: the
// summary added after the run goes below it instead of being drawn over it.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const PREFIX = "MotionInversion_";
const LEARN = PREFIX + "LearnMotionEmbedding";
const CURVE_WIDGET = "loss_curve";
const CURVE_HEIGHT = 90;

function drawCurve(ctx, node, top, width) {
  const losses = node.__miLosses || [], total = node.__miTotal || losses.length;
  const left = 15, inner = width - 30;
  ctx.save();
  ctx.fillStyle = "#181818";
  ctx.fillRect(left, top, inner, CURVE_HEIGHT);
  const values = losses.filter((v) => Number.isFinite(v) && v > 0).map((v) => Math.log10(v));
  if (values.length > 1) {
    const low = Math.min(...values), high = Math.max(...values), span = Math.max(high - low, 1e-6);
    ctx.strokeStyle = "#ffa028";
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    values.forEach((v, i) => {
      const x = left + (i / Math.max(total - 1, values.length - 1, 1)) * inner;
      const y = top + 18 + ((high - v) / span) * (CURVE_HEIGHT - 22);
      i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
    });
    ctx.stroke();
  }
  ctx.fillStyle = "#ddd";
  ctx.font = "11px sans-serif";
  const last = losses.length ? losses[losses.length - 1].toPrecision(4) : "-";
  ctx.fillText(`step ${losses.length ? node.__miSteps : 0}/${total}  loss ${last}`, left + 4, top + 12);
  ctx.restore();
}

function fitHeight(node) {
  const wanted = node.computeSize()[1];
  if (node.size[1] < wanted) node.setSize([node.size[0], wanted]);
}

function curveWidget(node) {
  let widget = node.widgets?.find((w) => w.name === CURVE_WIDGET);
  if (!widget) {
    widget = node.addCustomWidget({
      name: CURVE_WIDGET, type: "motion_inversion_curve", value: null, serialize: false,
      options: { serialize: false },
      draw(ctx, drawnNode, width, y) { drawCurve(ctx, drawnNode, y + 4, width); },
      computeSize(width) { return [width, CURVE_HEIGHT + 8]; },
    });
    fitHeight(node);
  }
  return widget;
}

app.registerExtension({
  name: "motion_inversion.ui",
  async setup() {
    api.addEventListener("motion_inversion.loss", ({ detail }) => {
      const node = app.graph.getNodeById(Number(detail.node));
      if (!node) return;
      if (detail.previous) node.__miLosses = detail.previous.slice();   // a resumed run: the earlier curve first
      else if (detail.step <= 1 || !node.__miLosses) node.__miLosses = [];
      node.__miLosses.push(detail.loss);
      node.__miSteps = detail.step;
      node.__miTotal = detail.total;
      curveWidget(node);
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
      if (nodeData.name === LEARN && this.__miLosses?.length) curveWidget(this);   // the curve keeps its slot above
      let widget = this.widgets?.find((w) => w.name === "summary");
      if (!widget) {
        widget = this.addWidget("text", "summary", "", () => {}, { serialize: false });
        widget.serialize = false;        // neither in the prompt nor in the saved workflow's widgets_values
        if (widget.inputEl) widget.inputEl.readOnly = true;
      }
      widget.value = text;
      fitHeight(this);
      this.setDirtyCanvas(true, true);
    };
  },
});
