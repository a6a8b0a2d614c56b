// Staff: upload a dataset zip with byte progress, follow ingestion, read the report.
import { api, uploadWithProgress } from "../api.js";
import { badge, bytes, clear, el, field, hbars, notice, progressBar, table, when } from "../ui.js";

const STATUS = { ready: "ok", ingesting: "warn", failed: "bad" };

export async function renderList(main) {
  document.title = "Datasets · Hilum";
  main.append(el("h1", { text: "Datasets" }));
  const name = el("input", { type: "text", name: "name", required: true, placeholder: "e.g. ward3-2026" });
  const file = el("input", { type: "file", name: "file", accept: ".zip,application/zip", required: true });
  const bar = progressBar("Upload progress");
  bar.node.hidden = true;
  const status = el("div", { "aria-live": "polite" });
  const submit = el("button", { type: "submit", text: "Upload" });
  const form = el("form", { class: "panel", "aria-labelledby": "up-title" },
    el("h2", { id: "up-title", text: "Upload a dataset" }),
    el("p", { class: "small muted", text: "A zip of class folders (NORMAL/, PNEUMONIA/) or of images with a labels.csv. DICOM, PNG and JPEG." }),
    el("div", { class: "row" }, field("Name", name), field("Zip file", file), submit), bar.node, status);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!file.files.length) return;
    const f = file.files[0];
    const body = new FormData();
    body.append("name", name.value);
    body.append("file", f);
    bar.node.hidden = false;
    submit.disabled = true;
    clear(status);
    try {
      const ds = await uploadWithProgress("/v1/datasets", body, (done, total) =>
        bar.set(total ? done / total : 0, `${bytes(done)} of ${bytes(total ?? f.size)} sent`, total ? `${Math.round((100 * done) / total)}%` : ""));
      bar.set(1, `${bytes(f.size)} of ${bytes(f.size)} sent`, "100%");
      status.append(notice("ok", `Uploaded ${f.name}: ingestion is running. `, el("a", { href: `#/datasets/${ds.id}`, text: "Follow it and read the report →" })));
      await drawList();
    } catch (err) {
      status.append(notice("bad", `Upload refused: ${err.message}`));
    } finally {
      submit.disabled = false;
    }
  });
  const listBox = el("div", { class: "panel" });
  main.append(form, listBox);
  const drawList = async () => {
    const list = await api.get("/v1/datasets");
    clear(listBox).append(el("h2", { text: "All datasets" }), list.length
    ? table(["Name", "Status", "Images", "Classes", "Uploaded"], list.map((d) => [
      el("a", { href: `#/datasets/${d.id}`, text: d.name }), badge(d.status, STATUS[d.status]), String(d.image_count),
      Object.entries(d.class_counts || {}).map(([k, v]) => `${k} ${v}`).join(", "), when(d.created_at)]), { numeric: [2] })
      : el("p", { class: "muted", text: "No dataset yet." }));
  };
  await drawList();
}

export async function renderOne(main, [id]) {
  document.title = "Dataset · Hilum";
  const head = el("div"), body = el("div");
  main.append(head, body);
  let timer = null, stopped = false;
  const refresh = async () => {
    const d = await api.get(`/v1/datasets/${id}`);
    if (stopped) return;
    clear(head).append(el("h1", { text: `Dataset ${d.name}` }),
      el("p", {}, badge(d.status, STATUS[d.status]), ` ${d.upload_filename ?? ""} · ${bytes(d.upload_bytes)} · uploaded ${when(d.created_at)}`));
    if (d.status === "ingesting") {
      const bar = progressBar("Ingestion progress");
      const p = d.report?.progress || d.progress || null;
      if (p && p.total) bar.set(p.done / p.total, `${p.done} of ${p.total} files`, "");
      else bar.indeterminate("decoding and checking files");
      clear(body).append(el("div", { class: "panel" }, el("p", { text: "Ingesting: decoding and checking every file…" }), bar.node));
      timer = setTimeout(refresh, 1000);
      return;
    }
    clear(body);
    if (d.status === "failed") body.append(notice("bad", `Ingestion failed: ${d.error}`));
    if (d.report) body.append(report(d));
    if (d.status === "ready") body.append(el("p", {}, el("a", { href: `#/train?dataset=${d.id}`, text: "Train a model on this dataset →" })));
  };
  await refresh();
  return () => { stopped = true; clearTimeout(timer); };
}

function report(d) {
  const r = d.report;
  const wrap = el("div");
  const counts = Object.entries(r.class_counts || d.class_counts || {});
  const imbalance = r.imbalance_ratio;
  wrap.append(el("div", { class: "grid" },
    el("section", { class: "panel" }, el("h2", { text: "Classes" }), hbars(counts),
      el("p", {}, `Imbalance (largest / smallest class): `, el("strong", { text: imbalance != null ? `${imbalance}×` : "–" })),
      imbalance != null && imbalance > 3 ? notice("warn", "The classes are strongly imbalanced: training balances them, but more films of the small class would help.") : null),
    el("section", { class: "panel" }, el("h2", { text: "Summary" }), table(["", ""], [
      ["Accepted images", String(r.accepted ?? d.image_count)],
      ["Patients", String(r.patient_count ?? "–")],
      ["Rejected files", String((r.rejected || []).length)],
      ["Duplicates", String((r.duplicates || []).length)],
      ["Label conflicts", String((r.conflicts || []).length)],
      ["Layout", r.layout ?? d.layout ?? "–"],
      ["Formats", Object.entries(r.formats || {}).map(([k, v]) => `${k} ${v}`).join(", ") || "–"],
    ]))));
  const mix = r.dicom_mix || {};
  const mixRows = Object.entries(mix).flatMap(([kind, values]) => Object.entries(values).map(([k, v]) => [kind.replace("_", " "), k, String(v)]));
  wrap.append(el("section", { class: "panel" }, el("h2", { text: "DICOM mix" }),
    mixRows.length ? table(["Attribute", "Value", "Files"], mixRows, { numeric: [2] }) : el("p", { class: "muted", text: "No DICOM files." })));
  const rejected = r.rejected || [];
  const search = el("input", { type: "search", name: "rejected-search", placeholder: "file name or reason" });
  const rejBox = el("div");
  const drawRejected = () => {
    const q = search.value.toLowerCase();
    const rows = rejected.filter((x) => !q || x.file.toLowerCase().includes(q) || x.reason.toLowerCase().includes(q));
    clear(rejBox).append(el("p", { class: "small muted", text: `${rows.length} of ${rejected.length} shown` }),
      table(["File", "Reason"], rows.slice(0, 500).map((x) => [el("span", { class: "mono", text: x.file }), x.reason])));
  };
  search.addEventListener("input", drawRejected);
  drawRejected();
  wrap.append(el("section", { class: "panel" }, el("h2", { text: `Rejected files (${rejected.length})` }), field("Search rejected files", search), rejBox));
  const dups = r.duplicates || [];
  wrap.append(el("section", { class: "panel" }, el("h2", { text: `Duplicates (${dups.length})` }),
    el("p", { class: "small muted", text: "Identical files with the same label: kept once." }),
    dups.length ? table(["File", "Duplicate of"], dups.map((x) => [x.file, x.duplicate_of])) : el("p", { class: "muted", text: "None." })));
  const conf = r.conflicts || [];
  wrap.append(el("section", { class: "panel" }, el("h2", { text: `Label conflicts (${conf.length})` }),
    el("p", { class: "small muted", text: "Identical files under different labels: every copy is dropped." }),
    conf.length ? table(["File", "Same as", "Labels"], conf.map((x) => [x.file, x.other, (x.labels || []).join(" vs ")])) : el("p", { class: "muted", text: "None." })));
  return wrap;
}
