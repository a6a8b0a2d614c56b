// Clinician: ask about one or several films; see the film as the model saw it, the answer and the heatmap.
import { api } from "../api.js";
import { badge, ci, clear, el, field, notice, pct, num, table, when } from "../ui.js";

const ACCEPT = ".dcm,.dicom,.png,.jpg,.jpeg,application/dicom,image/png,image/jpeg";

export async function render(main) {
  document.title = "Ask about a film · Hilum";
  const models = await api.get("/v1/models");
  main.append(el("h1", { text: "Ask about a film" }));
  if (!models.length) {
    main.append(notice("info", "No model has been trained yet. Staff can train one on the Train page."));
    return;
  }
  const modelSel = el("select", { name: "model" }, models.map((m) => el("option", { value: m.name, text: m.name })));
  const versionSel = el("select", { name: "version" });
  const fillVersions = () => {
    const m = models.find((x) => x.name === modelSel.value);
    const prod = m.aliases?.production;
    // The default answer comes from production, else from the newest version fit for use (service/domain/registry.py).
    const fit = m.versions.filter((v) => v.fit_for_use).map((v) => v.version);
    const dflt = prod ? `production (version ${prod})`
      : fit.length ? `default (version ${Math.max(...fit)})` : "default (no version is fit for use)";
    clear(versionSel).append(el("option", { value: "", text: dflt }),
      ...m.versions.map((v) => el("option", { value: v.version, text: `version ${v.version}${v.fit_for_use ? "" : " (not fit for use)"}` })));
  };
  modelSel.addEventListener("change", fillVersions);
  fillVersions();
  const oodLabel = el("input", { type: "checkbox", name: "label_when_ood" });
  const input = el("input", { type: "file", multiple: true, accept: ACCEPT, name: "films" });
  const zone = el("label", { class: "drop", for: input.id || (input.id = "films") },
    el("strong", { text: "Drop DICOM, PNG or JPEG films here" }), el("br"),
    el("span", { class: "muted", text: "or choose files (several at once are fine)" }), el("br"), input);
  const results = el("div", { id: "results", "aria-live": "polite" });
  main.append(el("div", { class: "panel" },
    el("div", { class: "row" }, field("Model", modelSel), field("Version", versionSel),
      el("label", { class: "inline", for: "ood" }, Object.assign(oodLabel, { id: "ood" }), "Show the label even for unusual films")),
    el("div", { class: "small muted", text: "Films are decoded exactly as for training (DICOM windowing included). Nothing is stored but the answer and a hash of the file." }),
    zone), results);
  const recent = el("div", { class: "panel" });
  main.append(recent);
  const run = async (files) => {
    for (const file of files) {
      const card = el("section", { class: "panel result-card", "aria-label": `Result for ${file.name}` });
      results.prepend(card);
      await askOne(card, file, { model: modelSel.value, version: versionSel.value, labelWhenOod: oodLabel.checked });
    }
    await renderRecent(recent);
  };
  input.addEventListener("change", () => { run([...input.files]); input.value = ""; });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); run([...e.dataTransfer.files]); });
  await renderRecent(recent);
}

async function askOne(card, file, { model, version, labelWhenOod }) {
  card.append(el("h2", { text: file.name }), el("p", { class: "muted", text: "Reading the film…" }));
  const form = () => { const f = new FormData(); f.append("file", file); return f; };
  let previewUrl;
  try {
    const res = await api.formRaw("/v1/preview", form());
    previewUrl = URL.createObjectURL(await res.blob());
  } catch (err) {
    clear(card).append(el("h2", { text: file.name }), refused(err));
    return;
  }
  const q = new URLSearchParams({ heatmap: "true" });
  if (version) q.set("version", version);
  if (labelWhenOod) q.set("label_when_ood", "true");
  let answer;
  try {
    answer = await api.form(`/v1/models/${encodeURIComponent(model)}/predict?${q}`, form());
  } catch (err) {
    clear(card).append(el("h2", { text: file.name }), refused(err));
    return;
  }
  clear(card).append(el("h2", { text: file.name }), el("div", { class: "result" }, filmView(previewUrl, answer), answerView(answer)));
}

function refused(err) {
  const why = err.status === 422 || err.status === 415 || err.status === 413
    ? "This file was refused: " : "The question could not be answered: ";
  return notice("bad", el("strong", { text: why }), err.message);
}

function filmView(previewUrl, answer) {
  const base = el("img", { src: previewUrl, alt: "The film as the model saw it (canonical grayscale)" });
  const box = el("div", { class: "film" }, base);
  const wrap = el("div", {}, el("h3", { text: "The film as the model saw it" }), box);
  const hm = answer.heatmap;
  if (!hm) { wrap.append(el("p", { class: "muted small", text: "No heatmap for this answer." })); return wrap; }
  const overlay = el("img", { class: "overlay", src: `data:image/png;base64,${hm.png_base64}`, alt: `Heatmap of the evidence for ${hm.class_name}` });
  overlay.style.opacity = "0.7";
  box.append(overlay);
  const opacity = el("input", { type: "range", min: 0, max: 100, value: 70, name: "opacity" });
  opacity.addEventListener("input", () => { overlay.style.opacity = String(opacity.value / 100); });
  const scale = hm.scale || {};
  const ramp = el("span", { class: `ramp ${scale.colormap === "gray" ? "gray" : ""}` });
  wrap.append(
    field(`Heatmap opacity (evidence for ${hm.class_name})`, opacity),
    el("div", { class: "legend", role: "group", "aria-label": "Heatmap legend" },
      el("span", { text: `${scale.min ?? 0} (none)` }), ramp, el("span", { text: `${scale.max ?? 1} (strong)` })),
    scale.meaning ? el("p", { class: "small muted", text: `Legend: ${scale.meaning}` }) : null);
  return wrap;
}

function answerView(a) {
  const pos = a.positive_class;
  const pPos = pos ? a.probabilities[pos] : Math.max(...Object.values(a.probabilities));
  const op = a.operating_point || {};
  const box = el("div", { class: "answer" });
  // The API words its own warnings (uncertain, unusual film, random weights, unfit); older servers send none.
  const warnings = a.warnings || [];
  for (const w of warnings) box.append(notice(/withheld|unlike|no real skill|not fit/i.test(w) ? "bad" : "warn", w));
  if (!warnings.length && a.fit_for_use === false) box.append(notice("bad", "This model version showed no real skill on validation: do not rely on it."));
  if (!warnings.length && a.in_distribution === false) box.append(notice("bad", el("strong", { text: "Unusual film. " }), "It looks unlike the films the model was trained on", a.ood_score != null ? ` (score ${num(a.ood_score, 1)} above ${num(a.ood_threshold, 1)})` : "", "."));
  const uncertain = Array.isArray(a.prediction_set) && a.prediction_set.length > 1;
  if (!warnings.length && uncertain) box.append(notice("warn", el("strong", { text: "Uncertain. " }), `The ${pct(a.coverage, 0)} prediction set holds ${a.prediction_set.join(" and ")}: refer to a radiologist.`));
  const labelNode = a.label_withheld || a.label == null
    ? el("p", { class: "label-big", text: "Label withheld" })
    : el("p", { class: `label-big ${a.label === pos ? "positive" : "negative"}`, "data-testid": "label", text: a.label });
  const fill = el("span"); fill.style.width = pct(pPos);
  box.append(el("h3", { text: "Answer" }), labelNode,
    el("p", {}, `Probability of ${pos ?? "the top class"}: `, el("strong", { "data-testid": "probability", text: pct(pPos) })),
    el("div", { class: "prob", role: "img", "aria-label": `probability ${pct(pPos)}` }, fill));
  const sens = op.sensitivity, spec = op.specificity;
  box.append(el("h3", { text: "Operating point" }),
    el("p", { "data-testid": "operating-point" },
      `Label given when the probability of ${pos ?? "the positive class"} is at least `, el("strong", { text: num(op.threshold ?? a.threshold, 3) }), ". ",
      sens != null ? `On validation films this finds ${pct(sens)} of ${pos ?? "positive"} films (sensitivity${ci(op.sensitivity_ci95) ? `, 95% CI ${ci(op.sensitivity_ci95)}` : ""})` : "",
      spec != null ? ` and correctly clears ${pct(spec)} of the others (specificity${ci(op.specificity_ci95) ? `, 95% CI ${ci(op.specificity_ci95)}` : ""}).` : "",
      op.n_pos != null ? ` From ${op.n_pos} positive and ${op.n_neg} negative validation films.` : ""),
    op.rule ? el("p", { class: "small muted", text: `Chosen by: ${op.rule}${op.changed_at ? ` (changed ${when(op.changed_at)})` : ""}` }) : null);
  const dl = el("dl", { class: "kv" });
  const kv = (k, v) => dl.append(el("dt", { text: k }), el("dd", {}, v));
  kv("Model", `${a.model}, version ${a.version}`);
  kv("Probabilities", Object.entries(a.probabilities).map(([k, v]) => `${k} ${pct(v)}`).join(", "));
  if (a.prediction_set) kv("Prediction set", `${a.prediction_set.join(", ")} (${pct(a.coverage, 0)} coverage)`);
  if (a.in_distribution != null) kv("Looks like training films", a.in_distribution ? badge("yes", "ok") : badge("no", "bad"));
  if (a.prediction_id) kv("Prediction id", el("span", { class: "mono", text: a.prediction_id }));
  box.append(el("h3", { text: "Details" }), dl);
  return box;
}

async function renderRecent(box) {
  const rows = await api.get("/v1/predictions/mine?limit=20");
  clear(box).append(el("h2", { text: "Your recent predictions" }));
  if (!rows.length) { box.append(el("p", { class: "muted", text: "None yet." })); return; }
  box.append(table(["When", "Model", "Label", "Probabilities", "Format"], rows.map((p) => [
    when(p.created_at), `${p.model_name} v${p.version}`, p.label ?? "withheld",
    Object.entries(p.probabilities).map(([k, v]) => `${k} ${pct(v)}`).join(", "), p.source_format ?? "",
  ])));
}
