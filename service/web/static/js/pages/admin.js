// Admin: API keys (shown once), the weights registry, the prediction audit log with CSV export.
import { api, uploadWithProgress } from "../api.js";
import { badge, bytes, clear, downloadText, el, field, notice, pct, progressBar, table, when } from "../ui.js";

export async function renderKeys(main) {
  document.title = "Keys · Hilum";
  main.append(el("h1", { text: "API keys" }));
  const name = el("input", { type: "text", name: "name", required: true, placeholder: "e.g. radiology-workstation-3" });
  const role = el("select", { name: "role" }, ["clinician", "staff", "admin"].map((r) => el("option", { value: r, text: r })));
  const shown = el("div", { "aria-live": "polite" });
  const form = el("form", { class: "panel" }, el("h2", { text: "Create a key" }),
    el("div", { class: "row" }, field("Name", name), field("Role", role), el("button", { type: "submit", text: "Create key" })), shown);
  const list = el("div", { class: "panel" });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clear(shown);
    try {
      const k = await api.post("/v1/keys", { name: name.value, role: role.value });
      const out = el("input", { type: "text", readonly: true, value: k.key, "aria-label": "The new key", "data-testid": "new-key" });
      const copy = el("button", { type: "button", class: "secondary", text: "Copy", onclick: async () => {
        try { await navigator.clipboard.writeText(k.key); copy.textContent = "Copied"; } catch { out.select(); copy.textContent = "Selected: press Ctrl+C"; }
      } });
      shown.append(notice("warn", el("strong", { text: "Shown once. " }), `Copy the key for ${k.name} (${k.role}) now: Hilum keeps only its hash.`),
        el("div", { class: "keyshow" }, out, copy));
      name.value = "";
      await drawList();
    } catch (err) { shown.append(notice("bad", `Refused: ${err.message}`)); }
  });
  const drawList = async () => {
    const keys = await api.get("/v1/keys");
    clear(list).append(el("h2", { text: "Keys" }), table(["Name", "Role", "Starts with", "Created", "Status", ""], keys.map((k) => {
      const active = !k.revoked_at;
      const cell = el("span");
      if (active) {
        const revoke = el("button", { type: "button", class: "danger", text: "Revoke", "aria-label": `Revoke ${k.name}`, onclick: () => {
          clear(cell).append(el("button", { type: "button", class: "danger", text: "Confirm revoke", "aria-label": `Confirm revoking ${k.name}`, onclick: async () => {
            try { await api.del(`/v1/keys/${k.id}`); await drawList(); } catch (err) { cell.append(notice("bad", err.message)); }
          } }), " ", el("button", { type: "button", class: "secondary", text: "Keep", onclick: () => clear(cell).append(revoke) }));
        } });
        cell.append(revoke);
      }
      return [k.name, k.role, el("span", { class: "mono", text: k.prefix }), when(k.created_at),
        active ? badge("active", "ok") : badge(`revoked ${when(k.revoked_at)}`, "bad"), cell];
    })));
  };
  main.append(form, list);
  await drawList();
}

export async function renderWeights(main) {
  document.title = "Weights · Hilum";
  main.append(el("h1", { text: "Weights registry" }),
    el("p", { class: "muted", text: "Pretrained ImageNet weights for air-gapped sites: a .safetensors or .pth state dict per backbone. Jobs can start from them." }));
  const backbone = el("input", { type: "text", name: "backbone", required: true, placeholder: "e.g. resnet18" });
  const file = el("input", { type: "file", name: "file", accept: ".safetensors,.pth,.pt,.bin", required: true });
  const bar = progressBar("Upload progress");
  bar.node.hidden = true;
  const status = el("div", { "aria-live": "polite" });
  const form = el("form", { class: "panel" }, el("h2", { text: "Register a weights file" }),
    el("div", { class: "row" }, field("Backbone", backbone), field("Weights file", file), el("button", { type: "submit", text: "Upload" })), bar.node, status);
  const list = el("div", { class: "panel" });
  const drawList = async () => {
    const rows = await api.get("/v1/weights");
    clear(list).append(el("h2", { text: "Registered weights" }), rows.length
      ? table(["Backbone", "File", "Format", "SHA-256", "Added"], rows.map((w) => [w.backbone, w.filename, w.format, el("span", { class: "mono", text: w.sha256.slice(0, 16) + "…" }), when(w.created_at)]))
      : el("p", { class: "muted", text: "None yet: jobs can use ImageNet from the hub (needs internet) or random weights." }));
  };
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!file.files.length) return;
    const body = new FormData();
    body.append("backbone", backbone.value);
    body.append("file", file.files[0]);
    bar.node.hidden = false;
    clear(status);
    try {
      await uploadWithProgress("/v1/weights", body, (done, total) => bar.set(total ? done / total : 0, `${bytes(done)} of ${bytes(total)}`, ""));
      status.append(notice("ok", "Registered."));
      await drawList();
    } catch (err) { status.append(notice("bad", `Refused: ${err.message}`)); }
  });
  main.append(form, list);
  await drawList();
}

const CSV_COLUMNS = ["id", "created_at", "key_id", "model_name", "version", "label", "probabilities", "source_format", "input_sha256", "latency_ms"];

function csvCell(v) {
  const s = v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export async function renderAudit(main) {
  document.title = "Audit log · Hilum";
  main.append(el("h1", { text: "Prediction audit log" }));
  const models = await api.get("/v1/models");
  const model = el("select", { name: "model" }, el("option", { value: "", text: "all models" }), models.map((m) => el("option", { value: m.name, text: m.name })));
  const key = el("input", { type: "search", name: "key", placeholder: "key id" });
  const label = el("input", { type: "search", name: "label", placeholder: "e.g. PNEUMONIA" });
  const from = el("input", { type: "date", name: "from" });
  const to = el("input", { type: "date", name: "to" });
  const out = el("div");
  let rows = [];
  const filtered = () => rows.filter((p) => (!key.value || (p.key_id || "").startsWith(key.value.trim()))
    && (!label.value || (p.label || "").toLowerCase() === label.value.trim().toLowerCase())
    && (!from.value || p.created_at.slice(0, 10) >= from.value) && (!to.value || p.created_at.slice(0, 10) <= to.value));
  const draw = () => {
    const shown = filtered();
    clear(out).append(el("p", { class: "small muted", text: `${shown.length} of ${rows.length} loaded predictions` }),
      table(["When", "Key", "Model", "Label", "Probabilities", "Format", "Latency"], shown.map((p) => [when(p.created_at), el("span", { class: "mono", text: (p.key_id || "").slice(0, 8) }),
        `${p.model_name} v${p.version}`, p.label ?? "withheld", Object.entries(p.probabilities).map(([k, v]) => `${k} ${pct(v)}`).join(", "), p.source_format ?? "",
        p.latency_ms != null ? `${p.latency_ms.toFixed(0)} ms` : ""]), { numeric: [6] }));
  };
  const load = async () => {
    rows = await api.get(`/v1/predictions?limit=1000${model.value ? `&model=${encodeURIComponent(model.value)}` : ""}`);
    draw();
  };
  for (const c of [key, label, from, to]) c.addEventListener("input", draw);
  model.addEventListener("change", load);
  const exportCsv = el("button", { type: "button", class: "secondary", text: "Export CSV", onclick: () => {
    const lines = [CSV_COLUMNS.join(","), ...filtered().map((p) => CSV_COLUMNS.map((c) => csvCell(p[c])).join(","))];
    downloadText(`hilum-predictions-${new Date().toISOString().slice(0, 10)}.csv`, lines.join("\n") + "\n");
  } });
  main.append(el("div", { class: "panel" }, el("div", { class: "row" }, field("Model", model), field("Key id", key), field("Label", label),
    field("From", from), field("To", to), exportCsv), out));
  await load();
}
