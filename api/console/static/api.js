// The REST client. Tokens live in sessionStorage: they survive a reload of this tab, vanish when the tab
// closes, are never sent as cookies (so no CSRF), and the strict CSP leaves no way for injected script to
// run and read them.

const KEY = "taskyard.console.session";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

export const session = {
  load() {
    try {
      return JSON.parse(sessionStorage.getItem(KEY) || "null");
    } catch {
      return null;
    }
  },
  save(value) {
    sessionStorage.setItem(KEY, JSON.stringify(value));
  },
  clear() {
    sessionStorage.removeItem(KEY);
  },
};

let onLoggedOut = () => {};
export function setLoggedOutHandler(fn) {
  onLoggedOut = fn;
}

export function accessToken() {
  const s = session.load();
  return s ? s.accessToken : null;
}

// One refresh at a time: a REST call and the socket may both find the token expired, and refresh tokens
// are single-use (a second use of the same one would end the session).
let refreshing = null;
function refresh() {
  if (!refreshing) refreshing = doRefresh().finally(() => { refreshing = null; });
  return refreshing;
}

async function doRefresh() {
  const s = session.load();
  if (!s || !s.refreshToken) return false;
  const response = await fetch("/api/auth/refresh", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ refreshToken: s.refreshToken }),
  });
  if (!response.ok) return false;
  const body = await response.json();
  session.save({ ...s, accessToken: body.accessToken, refreshToken: body.refreshToken });
  return true;
}

export async function api(method, path, body, { retry = true } = {}) {
  const headers = {};
  const token = accessToken();
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401 && retry && token) {
    if (await refresh()) return api(method, path, body, { retry: false });
    endSession();
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { message: text };
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export async function login(email, password) {
  const tokens = await api("POST", "/api/auth/login", { email, password }, { retry: false });
  session.save({ accessToken: tokens.accessToken, refreshToken: tokens.refreshToken });
  const me = await api("GET", "/api/auth/me");
  session.save({ ...session.load(), me });
  return me;
}

export async function logout() {
  const s = session.load();
  try {
    if (s) await api("POST", "/api/auth/logout", { refreshToken: s.refreshToken }, { retry: false });
  } finally {
    session.clear();
  }
}

export function me() {
  const s = session.load();
  return s ? s.me : null;
}

export function isAdmin() {
  const user = me();
  return Boolean(user && user.roles && user.roles.includes("admin"));
}

export function refreshSession() {
  return refresh();
}

// The session is over (refused and not refreshable): back to the login form.
export function endSession() {
  session.clear();
  onLoggedOut();
}
