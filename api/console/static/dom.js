// DOM helpers. Every piece of data goes in through textContent or an attribute: never innerHTML.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = String(value);
    else if (key === "className") el.className = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function json(value) {
  return value === undefined ? "" : JSON.stringify(value, null, 2);
}

export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

// A labelled form field: the label wraps its control, so screen readers and clicks both find it.
export function field(label, control) {
  return h("label", { className: "field" }, h("span", { text: label }), control);
}

export function flash(target, message, kind = "error") {
  clear(target);
  if (message) target.append(h("p", { className: `flash ${kind}`, role: kind === "error" ? "alert" : "status", text: message }));
}

export function statusBadge(status) {
  return h("span", { className: `badge status-${status}`, text: status });
}
