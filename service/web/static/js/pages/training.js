// Staff: the training form, the job list, and a job followed live from its event stream.
import { api } from "../api.js";
import { chartKey, lineChart } from "../charts.js";
import { badge, clear, duration, el, field, notice, num, progressBar, table, when } from "../ui.js";

// The backbones the API accepts (JobCreate.backbone); the server checks again.
const BACKBONES = ["resnet18", "resnet34", "resnet50", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2",
  "efficientnet_b3", "efficientnet_b4", "test_resnet", "test_efficientnet"];
const STATUS = { succeeded: "ok", running: "warn", queued: "", failed: "bad", cancelled: "bad" };

function queryParam(name) {
  const q = location.hash.split("?")[1] || "";
  return new URLSearchParams(q).get(name);
}

export async function renderForm(main) {
  document.title = "Train · Hilum";
  const [datasets, weights] = await Promise.all([api.get("/v1/datasets?status=ready"), api.get("/v1/weights")]);
  main.append(el("h1", { text: "Train a model" }));
  if (!datasets.length) {
    main.append(notice("info", "No ready dataset: ", el("a", { href: "#/datasets", text: "upload one first" }), "."));
    return;
  }
  const wanted = queryParam("dataset");
  const dataset = el("select", { name: "dataset_id" }, datasets.map((d) =>
    el("option", { value: d.id, selected: d.id === wanted, text: `${d.name} (${d.image_count} images)` })));
  const backbone = el("select", { name: "backbone" }, BACKBONES.map((b) => el("option", { value: b, selected: b === "resnet18", text: b })));
  const strategy = el("select", { name: "strategy" },
    el("option", { value: "gradual", text: "gradual unfreezing (recommended)" }),
    el("option", { value: "frozen", text: "frozen backbone (fastest)" }),
    el("option", { value: "full", text: "full fine-tune" }));
  const epochs = el("input", { type: "number", name: "epochs", min: 1, max: 300, value: 10 });
  const size = el("input", { type: "number", name: "image_size", min: 32, max: 1024, step: 16, value: 224 });
  const batch = el("input", { type: "number", name: "batch_size", min: 1, max: 1024, value: 32 });
  const modelName = el("input", { type: "text", name: "model_name", value: "pneumonia", pattern: "[a-z0-9][a-z0-9._\\-]{0,63}" });
  const lr = el("input", { type: "number", name: "lr", min: 0, max: 1, step: "any", placeholder: "default for the strategy" });
  const target = el("input", { type: "number", name: "target_sensitivity", min: 0.5, max: 0.99, step: 0.01, value: 0.95 });
  const weightSel = el("select", { name: "weights" });
  const warn = el("div", { "aria-live": "polite" });
  const fillWeights = () => {
    const local = weights.filter((w) => w.backbone === backbone.value);
    clear(weightSel).append(
      ...local.map((w) => el("option", { value: w.id, text: `registered: ${w.filename}` })),
      el("option", { value: "imagenet", text: "ImageNet (downloaded from the hub: needs internet)" }),
      el("option", { value: "none", text: "none: random weights" }));
    weightSel.value = local.length ? local[0].id : "none";
    showWarn();
  };
  const showWarn = () => {
    clear(warn);
    if (weightSel.value === "none") {
      warn.append(notice("warn", el("strong", { text: "Random weights. " }),
        "Without pretrained weights the model learns from your films alone and is usually much weaker. An admin can register a weights file for this backbone on the Weights page."));
    }
  };
  backbone.addEventListener("change", fillWeights);
  weightSel.addEventListener("change", showWarn);
  fillWeights();
  const status = el("div", { "aria-live": "polite" });
  const form = el("form", { class: "panel" },
    el("div", { class: "grid" }, field("Dataset", dataset), field("Backbone", backbone), field("Strategy", strategy),
      field("Epochs", epochs), field("Image size (px)", size), field("Batch size", batch),
      field("Initial weights", weightSel), field("Model name", modelName), field("Learning rate (optional)", lr),
      field("Target sensitivity", target, "the operating threshold is chosen to reach it on validation")),
    warn, el("p", {}, el("button", { type: "submit", text: "Start training" })), status);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clear(status);
    try {
      const job = await api.post("/v1/jobs", {
        dataset_id: dataset.value, backbone: backbone.value, strategy: strategy.value, epochs: Number(epochs.value),
        image_size: Number(size.value), batch_size: Number(batch.value), model_name: modelName.value,
        weights: weightSel.value, target_sensitivity: Number(target.value), ...(lr.value ? { lr: Number(lr.value) } : {}),
      });
      location.hash = `#/jobs/${job.id}`;
    } catch (err) {
      status.append(notice("bad", `Refused: ${err.message}`));
    }
  });
  main.append(form);
}

export async function renderList(main) {
  document.title = "Jobs · Hilum";
  const jobs = await api.get("/v1/jobs?limit=100");
  main.append(el("h1", { text: "Training jobs" }), el("p", {}, el("a", { href: "#/train", text: "Start a new job →" })));
  main.append(el("div", { class: "panel" }, jobs.length ? table(["Job", "Status", "Model", "Backbone", "Strategy", "Val AUROC", "Created"],
    jobs.map((j) => [el("a", { href: `#/jobs/${j.id}`, class: "mono", text: j.id.slice(0, 8) }), badge(j.status, STATUS[j.status]),
      j.model_version ? `${j.model_name} v${j.model_version}` : j.model_name, j.spec.backbone, j.spec.strategy,
      num(j.metrics?.val?.auroc), when(j.created_at)]), { numeric: [5] }) : el("p", { class: "muted", text: "No job yet." })));
}

export async function renderJob(main, [id]) {
  document.title = "Job · Hilum";
  const head = el("div"), live = el("div", { class: "panel", "aria-live": "off" }), charts = el("div", { class: "grid" });
  const epochBar = progressBar("Epochs"), stepBar = progressBar("Steps in this epoch");
  const stepsTitle = el("h3", { text: "Steps in this epoch" });
  const phase = el("p", { "data-testid": "phase" }), groups = el("div"), end = el("div", { "aria-live": "polite" });
  live.append(el("h2", { text: "Progress" }), phase, el("h3", { text: "Epochs" }), epochBar.node,
    stepsTitle, stepBar.node, groups);
  const lossBox = el("section", { class: "panel" }), valBox = el("section", { class: "panel" });
  charts.append(lossBox, valBox);
  main.append(head, end, live, charts);
  const loss = new Map(), val = new Map();
  let source = null;

  const drawCharts = () => {
    clear(lossBox).append(el("h3", { text: "Training loss" }),
      lineChart({ title: "training loss", xLabel: "epoch", yLabel: "loss", series: [{ points: [...loss.entries()].sort((a, b) => a[0] - b[0]), dots: true }] }));
    const v = [...val.entries()].sort((a, b) => a[0] - b[0]);
    clear(valBox).append(el("h3", { text: "Validation AUROC and loss" }),
      lineChart({ title: "validation AUROC and loss", xLabel: "epoch", series: [
        { points: v.map(([e, m]) => [e, m.auroc]), dots: true }, { points: v.map(([e, m]) => [e, m.loss]), dots: true, cls: 1 }] }),
      chartKey(["validation AUROC", "validation loss"]));
  };

  const show = (job) => {
    clear(head).append(el("h1", { text: `Job ${job.id.slice(0, 8)}: ${job.model_name}` }),
      el("p", {}, badge(job.status, STATUS[job.status]), ` ${job.spec.backbone} · ${job.spec.strategy} · ${job.spec.epochs} epochs · ${job.spec.image_size} px · weights ${job.weights}`,
        job.worker ? ` · worker ${job.worker}` : ""));
    const p = job.progress || {};
    const epochs = p.epochs || job.spec.epochs;
    const done = p.epochs_done ?? 0;
    epochBar.set(done / epochs, `epoch ${Math.min(done + (job.status === "running" ? 1 : 0), epochs)} of ${epochs}`, p.eta_s != null && job.status === "running" ? `ETA ${duration(p.eta_s)}` : "");
    const running = job.status === "running";
    stepBar.node.hidden = !running;
    stepsTitle.hidden = !running;
    const spe = p.steps_per_epoch || 0;
    const inEpoch = spe ? Math.max(0, (p.step || 0) - done * spe) : 0;
    stepBar.set(spe ? Math.min(1, inEpoch / spe) : 0, spe ? `step ${Math.min(inEpoch, spe)} of ${spe}` : "", p.throughput_img_s ? `${p.throughput_img_s} images/s` : "");
    phase.textContent = job.status === "running" ? `Phase: ${p.phase ?? "starting"}${p.loss != null ? ` · loss ${num(p.loss)}` : ""}${p.val?.auroc != null ? ` · val AUROC ${num(p.val.auroc)}` : ""}`
      : job.status === "queued" ? "Waiting for a worker…" : `Finished: ${job.status}`;
    clear(groups);
    if (p.lr_by_group && Object.keys(p.lr_by_group).length) {
      groups.append(el("h3", { text: `Layer groups: ${p.unfrozen_groups ?? "?"} of ${p.total_groups ?? "?"} unfrozen` }),
        table(["Group (0 = bottom)", "Learning rate"], Object.entries(p.lr_by_group).map(([g, lr]) => [g, Number(lr).toExponential(2)]), { numeric: [1] }));
    }
    if (p.loss != null && spe && p.step) loss.set(Number((p.step / spe).toFixed(3)), p.loss);
    if (p.val && done) val.set(done, p.val);
    drawCharts();
    clear(end);
    if (job.status === "queued" || job.status === "running") {
      end.append(el("p", {}, el("button", { class: "danger", type: "button", disabled: job.cancel_requested, text: job.cancel_requested ? "Cancelling…" : "Cancel job",
        onclick: async (e) => { e.target.disabled = true; try { await api.post(`/v1/jobs/${id}/cancel`); } catch (err) { end.append(notice("bad", err.message)); } } })));
    } else if (job.status === "succeeded") {
      end.append(notice("ok", `Trained: ${job.model_name} version ${job.model_version}. `,
        el("a", { href: `#/jobs/${id}/report`, text: "Open the evaluation" }), " · ", el("a", { href: `#/models/${job.model_name}`, text: "Versions and promotion" })));
    } else if (job.status === "failed") {
      end.append(notice("bad", `Failed: ${job.error ?? "no reason recorded"}`));
    } else if (job.status === "cancelled") {
      end.append(notice("warn", "Cancelled. The last epoch checkpoint is kept."));
    }
  };

  // The stream shows the job's latest state; a fast epoch can pass between two events, so once the job
  // has succeeded the curves are redrawn from the report's per-epoch history (every epoch, exactly).
  const fromReport = async () => {
    try {
      const report = await api.get(`/v1/jobs/${id}/report`);
      loss.clear();
      val.clear();
      for (const h of report.history || []) {
        if (h.train_loss != null) loss.set(h.epoch, h.train_loss);
        if (h.val) val.set(h.epoch, h.val);
      }
      drawCharts();
    } catch { /* no report */ }
  };
  const job = await api.get(`/v1/jobs/${id}`);
  show(job);
  if (job.status === "succeeded") await fromReport();
  if (job.status === "queued" || job.status === "running") {
    source = new EventSource(`/v1/jobs/${id}/events`);
    source.addEventListener("job", (e) => {
      const next = JSON.parse(e.data);
      show(next);
      if (next.status === "succeeded") fromReport();
    });
    source.addEventListener("end", () => { source.close(); source = null; });
  }
  return () => { if (source) source.close(); };
}
