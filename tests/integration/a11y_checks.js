// The in-page half of tests/integration/test_web_accessibility.py: WCAG 2.1 AA essentials
// checked on the rendered page, run through Selenium's execute_script. Written for this
// project (axe-core is not available offline); each problem is one line of text.
// arguments[0]: {nav: bool} — whether the page must have a navigation landmark.
// Returns {problems: [string], title: string, focusable: [Element] in DOM order,
// skip: the skip link, or null when the page has none}.
const options = arguments[0];
const problems = [];
const fail = (text) => problems.push(text);

function describe(el) {
  let text = el.tagName.toLowerCase();
  if (el.id) text += "#" + el.id;
  const name = el.getAttribute("name");
  if (name) text += `[name=${name}]`;
  const words = (el.innerText || el.value || "").trim().replace(/\s+/g, " ").slice(0, 40);
  return words ? `${text} "${words}"` : text;
}

function rendered(el) {
  const style = getComputedStyle(el);
  return el.getClientRects().length > 0 && style.visibility !== "hidden";
}

// --- colours: sRGB parsing, alpha compositing, WCAG 2.1 relative luminance and ratio ---
function rgba(text) {
  const m = text.match(/rgba?\(([^)]+)\)/);
  if (!m) return null;
  const parts = m[1].split(/[ ,/]+/).filter((p) => p).map(Number);
  return [parts[0], parts[1], parts[2], parts.length > 3 ? parts[3] : 1];
}

function over(top, bottom) {
  const a = top[3];
  return [0, 1, 2].map((i) => top[i] * a + bottom[i] * (1 - a)).concat([1]);
}

function luminance(c) {
  const [r, g, b] = c.slice(0, 3).map((v) => {
    const s = v / 255;
    return s <= 0.04045 ? s / 12.92 : Math.pow((s + 0.055) / 1.055, 2.4);
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

function ratio(a, b) {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

// The opaque colour behind an element: its and its ancestors' backgrounds over white.
function background(el) {
  const layers = [];
  for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
    const style = getComputedStyle(node);
    if (style.backgroundImage !== "none") fail(`${describe(node)}: a background image (contrast not computable)`);
    layers.push(rgba(style.backgroundColor) || [0, 0, 0, 0]);
  }
  return layers.reverse().reduce((under, layer) => over(layer, under), [255, 255, 255, 1]);
}

function chromatic(c) {
  if (!c || c[3] === 0) return false;
  return Math.max(c[0], c[1], c[2]) - Math.min(c[0], c[1], c[2]) > 24;
}

// --- accessible names (the parts of accname 1.2 these pages use) ---
function textOf(ids) {
  return ids.split(/\s+/).map((id) => document.getElementById(id))
    .map((el) => (el ? el.textContent : "")).join(" ").trim();
}

function labelText(el) {
  const texts = [];
  if (el.labels) for (const label of el.labels) texts.push(label.textContent);
  return texts.join(" ").replace(/\s+/g, " ").trim();
}

function accessibleName(el) {
  const by = el.getAttribute("aria-labelledby");
  if (by) return textOf(by);
  const aria = el.getAttribute("aria-label");
  if (aria && aria.trim()) return aria.trim();
  const labelled = labelText(el);
  if (labelled) return labelled;
  if (el.tagName === "INPUT" && ["submit", "button", "reset"].includes(el.type)) return el.value.trim();
  if (["A", "BUTTON"].includes(el.tagName)) {
    const text = el.innerText.trim();
    if (text) return text;
  }
  return (el.getAttribute("title") || "").trim();
}

// --- document: language, title, viewport ---
if (!document.documentElement.lang) fail("html has no lang");
const title = document.title.trim();
if (!title) fail("the title is empty");
const viewport = document.querySelector('meta[name="viewport"]');
if (!viewport || !/width=device-width/.test(viewport.content)) {
  fail('no <meta name="viewport" content="width=device-width, ...">');
} else if (/user-scalable\s*=\s*no|maximum-scale\s*=\s*1(\.0)?\b/.test(viewport.content)) {
  fail("the viewport forbids zooming");
}

// --- ids unique (labels and aria references depend on them) ---
const seen = new Set();
for (const el of document.querySelectorAll("[id]")) {
  if (seen.has(el.id)) fail(`the id ${el.id} is used twice`);
  seen.add(el.id);
}

// --- headings: one h1, levels never skipped ---
const headings = [...document.querySelectorAll("h1, h2, h3, h4, h5, h6")];
const h1s = headings.filter((h) => h.tagName === "H1");
if (h1s.length !== 1) fail(`${h1s.length} h1 elements (want exactly one)`);
let level = 0;
for (const h of headings) {
  const now = Number(h.tagName[1]);
  if (now > level + 1) fail(`${describe(h)}: heading level ${now} after level ${level}`);
  if (!h.textContent.trim()) fail(`${describe(h)}: an empty heading`);
  level = now;
}

// --- landmarks and the skip link ---
const mains = document.querySelectorAll("main");
const main = mains[0];
if (mains.length !== 1) fail(`${mains.length} main elements (want exactly one)`);
const banners = [...document.querySelectorAll("header")].filter((h) => !h.closest("main, section, article, aside, nav"));
if (banners.length !== 1) fail(`${banners.length} page headers (want exactly one)`);
const navs = document.querySelectorAll("nav");
if (options.nav && navs.length === 0) fail("no nav landmark");
for (const nav of navs) {
  if (navs.length > 1 && !accessibleName(nav)) fail(`${describe(nav)}: several navs, this one unnamed`);
  for (const link of nav.querySelectorAll("a[href]")) {
    const here = new URL(link.href).pathname === location.pathname;
    if (here !== (link.getAttribute("aria-current") === "page")) {
      fail(`${describe(link)}: aria-current="page" ${here ? "missing on" : "on"} a link ${here ? "to" : "not to"} this page`);
    }
  }
}
const focusableSelector = 'a[href], button, input:not([type="hidden"]), select, textarea, [tabindex]';
const focusable = [...document.querySelectorAll(focusableSelector)]
  .filter((el) => !el.disabled && el.tabIndex >= 0)
  .filter((el) => rendered(el) || el.classList.contains("skip"));
for (const el of document.querySelectorAll("[tabindex]")) {
  if (el.tabIndex > 0) fail(`${describe(el)}: a positive tabindex changes the order`);
}
let skip = focusable[0] || null;
if (!skip || skip.tagName !== "A" || !main || skip.getAttribute("href") !== "#" + main.id) {
  fail("the first focusable element is not a skip link to main (href=#ID of <main>)");
  skip = null;
} else if (main.getAttribute("tabindex") !== "-1") {
  fail("main has no tabindex=-1 (the skip link would not move the focus)");
}

// --- form controls: a name, required ones marked ---
for (const el of document.querySelectorAll('input:not([type="hidden"]), select, textarea')) {
  const name = accessibleName(el);
  if (!name) fail(`${describe(el)}: a form field without a label`);
  if (el.labels) {
    for (const label of el.labels) {
      if (label.htmlFor && label.htmlFor !== el.id) fail(`${describe(el)}: its label is for another id`);
    }
  }
  if (el.required && !/\brequired\b/i.test(name)) fail(`${describe(el)}: required, not marked so in its label`);
  if (el.type === "password" && !["current-password", "new-password"].includes(el.autocomplete)) {
    fail(`${describe(el)}: a password field without autocomplete current-password or new-password (WCAG 1.3.5)`);
  }
  if (el.getAttribute("aria-invalid") === "true") {
    const by = el.getAttribute("aria-describedby") || "";
    const errors = by.split(/\s+/).map((id) => document.getElementById(id)).filter((e) => e);
    if (!errors.some((e) => e.closest('[role="alert"]') && e.textContent.trim())) {
      fail(`${describe(el)}: aria-invalid without aria-describedby naming the alert with the error`);
    }
  }
}

// --- buttons and links: a name, which contains the visible text (WCAG 2.5.3) ---
for (const el of document.querySelectorAll('a[href], button, input[type="submit"], input[type="button"]')) {
  const name = accessibleName(el);
  if (!name) {
    fail(`${describe(el)}: a ${el.tagName.toLowerCase()} without an accessible name`);
    continue;
  }
  const visible = (el.innerText || el.value || "").trim().replace(/\s+/g, " ").toLowerCase();
  if (visible && !name.replace(/\s+/g, " ").toLowerCase().includes(visible)) {
    fail(`${describe(el)}: its name "${name}" does not contain its visible text`);
  }
}

// --- tables: a caption, header cells with a scope ---
for (const table of document.querySelectorAll("table")) {
  if (!table.caption || !table.caption.textContent.trim()) fail(`${describe(table)}: a table without a caption`);
  const ths = table.querySelectorAll("th");
  if (ths.length === 0) fail(`${describe(table)} (${table.caption ? table.caption.textContent.trim() : ""}): no header cells`);
  for (const th of ths) {
    if (!["col", "row", "colgroup", "rowgroup"].includes(th.getAttribute("scope"))) {
      fail(`${describe(th)}: a th without a scope`);
    }
  }
}

// --- errors announced; status colours carry text too ---
for (const el of document.querySelectorAll(".error")) {
  if (!el.closest('[role="alert"]')) fail(`${describe(el)}: an error not in a role=alert element`);
}
for (const el of document.body.querySelectorAll("*")) {
  if (!rendered(el)) continue;
  const style = getComputedStyle(el);
  const coloured = chromatic(rgba(style.backgroundColor)) ||
    ["Top", "Right", "Bottom", "Left"].some((side) =>
      parseFloat(style[`border${side}Width`]) > 0 && chromatic(rgba(style[`border${side}Color`])));
  if (coloured && !(el.innerText || el.value || "").trim()) {
    fail(`${describe(el)}: shown by colour only, no text`);
  }
}

// --- a focus style in the style sheets (the Tab walk checks each control's outline) ---
let focusRule = false;
for (const sheet of document.styleSheets) {
  for (const rule of sheet.cssRules) {
    if (rule.selectorText && /:focus/.test(rule.selectorText) &&
        (rule.style.outlineStyle && rule.style.outlineStyle !== "none" || rule.style.boxShadow)) {
      focusRule = true;
    }
  }
}
if (!focusRule) fail("no :focus rule with an outline or box-shadow in the style sheets");

// --- text contrast ≥ 4.5:1 (WCAG 1.4.3; held for large text too) ---
const texts = new Set();
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  if (node.textContent.trim() && node.parentElement) texts.add(node.parentElement);
}
for (const el of document.querySelectorAll('input:not([type="hidden"]):not([type="checkbox"]), textarea, select, button')) {
  texts.add(el);
}
for (const el of texts) {
  if (!rendered(el) && !el.classList.contains("skip")) continue;
  const style = getComputedStyle(el);
  const bg = background(el);
  const fg = over(rgba(style.color), bg);
  const r = ratio(fg, bg);
  if (r < 4.5) fail(`${describe(el)}: contrast ${r.toFixed(2)}:1 (${style.color} on rgb(${bg.slice(0, 3).join(",")}))`);
}

return { problems, title, focusable, skip };
