// Drives the test app and the server's sign-in pages in headless Chromium, the way a person
// would: sign in, pick the patient (if asked), allow, then wait for the app's result.
//
//   node drive.js '{"url": "...", "username": "...", "password": "...", "patient": "...",
//                   "serverOrigin": "http://127.0.0.1:PORT", "timeoutMs": 30000}'
//
// Prints one JSON object on stdout: {result, pages, console, requests} or {error, ...} (exit 1).
"use strict";

const { chromium } = require("playwright-core");

const cfg = JSON.parse(process.argv[2]);
const timeoutMs = cfg.timeoutMs || 30000;
const executablePath = cfg.executablePath || "/usr/bin/chromium";

// What the current document is, decided from its stable element names.
function pageKind() {
  const done = document.querySelector("#result[data-done]");
  if (done) return "result";
  if (document.querySelector("input[name=password]")) {
    return document.querySelector("[role=alert]") ? "login-error" : "login";
  }
  if (document.querySelector("button[name=choose]")) return "picker";
  if (document.querySelector("button[name=approve]")) return "approve";
  if (document.querySelector("[role=alert]")) return "server-error";
  return null;
}

async function main() {
  const log = [];
  const requests = [];
  const pending = [];
  const pages = [];
  const browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox"],
                                          timeout: timeoutMs });
  const out = { pages, console: log, requests };
  try {
    const context = await browser.newContext();
    context.setDefaultTimeout(timeoutMs);
    const page = await context.newPage();
    page.on("console", (m) => log.push(`${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => log.push(`pageerror: ${e.message}`));
    page.on("requestfailed", (r) => log.push(`requestfailed: ${r.method()} ${r.url()} ${r.failure() && r.failure().errorText}`));
    // The app's calls to the FHIR/auth server (cross-origin: the app is served from another port).
    page.on("response", (r) => {
      const req = r.request();
      if (!cfg.serverOrigin || !r.url().startsWith(cfg.serverOrigin)) return;
      pending.push((async () => requests.push({
        method: req.method(), url: r.url(), status: r.status(), type: req.resourceType(),
        origin: (await req.headerValue("origin")) || null,
        allowOrigin: (await r.headerValue("access-control-allow-origin")) || null,
      }))().catch((e) => log.push(`response info: ${e.message}`)));
    });
    const deadline = Date.now() + timeoutMs;
    await page.goto(cfg.url);
    for (let step = 0; step < 10; step++) {
      const left = Math.max(1000, deadline - Date.now());
      const kind = await (await page.waitForFunction(pageKind, null, { timeout: left, polling: 100 })).jsonValue();
      pages.push(kind);
      if (kind === "result") {
        out.result = JSON.parse(await page.textContent("#result"));
        out.finalUrl = page.url();
        await Promise.all(pending);
        return out;
      }
      if (kind === "login-error" || kind === "server-error") {
        throw new Error(`the server showed an error page: ${await page.textContent("[role=alert]")}`);
      }
      let button;
      if (kind === "login") {
        await page.fill("input[name=username]", cfg.username);
        await page.fill("input[name=password]", cfg.password);
        button = "button[name=login]";
      } else if (kind === "picker") {
        if (!cfg.patient) throw new Error("the patient picker was shown but no patient was given");
        const radio = page.locator(`input[type=radio][name=patient][value="${cfg.patient}"]`);
        if (await radio.count()) await radio.check();
        else await page.fill("#patient-id", cfg.patient);
        button = "button[name=choose]";
      } else {
        button = "button[name=approve]";
      }
      // Each button submits a form: wait for the next document before looking at it.
      await Promise.all([page.waitForNavigation({ timeout: left }), page.click(button)]);
    }
    throw new Error(`no result after these pages: ${pages.join(", ")}`);
  } catch (e) {
    out.error = String(e && e.stack || e);
    try {
      const p = browser.contexts()[0] && browser.contexts()[0].pages()[0];
      if (p) {
        out.finalUrl = p.url();
        out.text = (await p.evaluate(() => document.body ? document.body.innerText : "")).slice(0, 2000);
        out.html = (await p.content()).slice(0, 4000);
      }
    } catch (_) { /* the page may be gone */ }
    return out;
  } finally {
    await browser.close();
  }
}

main().then((out) => {
  process.stdout.write(JSON.stringify(out) + "\n");
  process.exit(out.error ? 1 : 0);
}, (e) => {
  process.stdout.write(JSON.stringify({ error: String(e && e.stack || e) }) + "\n");
  process.exit(1);
});
