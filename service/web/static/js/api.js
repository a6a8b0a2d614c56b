// The public /v1 API, called with the session cookie; state-changing calls carry the CSRF token.
let csrf = null;
let onSignedOut = () => {};

export function setCsrf(token) { csrf = token; }
export function setSignedOutHandler(fn) { onSignedOut = fn; }

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.detail = detail;
  }
}

// FastAPI's 422 validation errors arrive as a list: turn them into one plain sentence.
export function plainDetail(detail) {
  if (Array.isArray(detail)) {
    return detail.map((d) => `${(d.loc || []).filter((x) => x !== "body").join(".")}: ${d.msg}`).join("; ");
  }
  if (detail && typeof detail === "object") return JSON.stringify(detail);
  return String(detail ?? "");
}

async function errorOf(res) {
  let detail = res.statusText;
  try {
    const body = await res.json();
    detail = plainDetail(body.detail ?? body);
  } catch { /* not JSON */ }
  return new ApiError(res.status, detail || `HTTP ${res.status}`);
}

export async function request(method, url, { json, form, raw = false } = {}) {
  const headers = {};
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  let body;
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  if (form !== undefined) body = form;
  const res = await fetch(url, { method, headers, body, credentials: "same-origin" });
  if (res.status === 401 && !url.startsWith("/web/session")) onSignedOut();
  if (!res.ok) throw await errorOf(res);
  if (raw) return res;
  if (res.status === 204) return null;
  return res.json();
}

export const api = {
  get: (url) => request("GET", url),
  post: (url, json) => request("POST", url, { json }),
  put: (url, json) => request("PUT", url, { json }),
  del: (url) => request("DELETE", url),
  form: (url, form) => request("POST", url, { form }),
  formRaw: (url, form) => request("POST", url, { form, raw: true }),
};

// An upload with byte progress (fetch cannot report upload progress; XMLHttpRequest can).
export function uploadWithProgress(url, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    if (csrf) xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.upload.addEventListener("progress", (e) => onProgress(e.loaded, e.lengthComputable ? e.total : null));
    xhr.addEventListener("load", () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else {
        if (xhr.status === 401) onSignedOut();
        reject(new ApiError(xhr.status, plainDetail(body?.detail ?? xhr.statusText)));
      }
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "the upload failed: the server could not be reached")));
    xhr.send(form);
  });
}
