// Drive Swagger UI in Debian's headless Chromium (playwright-core, no browser download):
// open /docs, Authorize with client credentials, run POST /v1/enrich for the demo guest and
// read a 200 with "found": true from the page. Run by tests/qa/test_swagger_ui.py.
//
// Environment: BASE_URL, CLIENT_ID, CLIENT_SECRET, CHROMIUM (the executable), USER_DATA_DIR
// (a fresh profile), SCREENSHOT (written on success), FAILURE_SCREENSHOT (written on failure).
import { chromium } from "playwright-core";

const env = process.env;
// The machine has no internet: keep Chromium from reaching for Google's services.
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

function log(message) {
  process.stdout.write(`${new Date().toISOString()} ${message}\n`);
}

const context = await chromium.launchPersistentContext(env.USER_DATA_DIR, {
  executablePath: env.CHROMIUM,
  headless: true,
  args: FLAGS,
  viewport: { width: 1280, height: 900 },
  deviceScaleFactor: 1,
});
const page = context.pages()[0] ?? (await context.newPage());
page.setDefaultTimeout(20000);
const failedRequests = [];
page.on("requestfailed", (request) => failedRequests.push(request.url()));
// Whatever the pages' Content-Security-Policy refused: each is a part of a page that broke.
// But one: ReDoc's sidebar shows Redocly's logo from their CDN, and hides it when it does not
// load; the policy keeps that request to another host from being made.
const EXPECTED_REFUSALS = ["https://cdn.redoc.ly/redoc/logo-mini.svg"];
const refused = [];
page.on("console", (message) => {
  const text = message.text();
  if (message.type() === "error") log(`console: ${text}`);
  if (/Content Security Policy/i.test(text) && !EXPECTED_REFUSALS.some((url) => text.includes(url))) {
    refused.push(text);
  }
});
// Violations the console may not show (in workers, or reported only as events).
await context.addInitScript(() => {
  document.addEventListener("securitypolicyviolation", (event) =>
    console.error(`Content Security Policy: ${event.violatedDirective} ${event.blockedURI}`),
  );
});
function checkPolicy(where) {
  if (refused.length) throw new Error(`${where}: the Content Security Policy refused ${refused.join(" | ")}`);
}

let status = 0;
try {
  log(`open ${env.BASE_URL}/docs`);
  await page.goto(`${env.BASE_URL}/docs`, { waitUntil: "networkidle" });
  await page.locator(".swagger-ui .information-container .title").waitFor();

  log("authorize with client credentials");
  await page.locator(".swagger-ui .auth-wrapper button.authorize").click();
  const modal = page.locator(".dialog-ux .modal-ux");
  // The OAuth 2.0 scheme's form (the modal may list other schemes, such as HTTP Basic).
  const oauth = modal.locator(".auth-container", { hasText: "clientCredentials" });
  await oauth.locator('input[data-name="clientId"]').fill(env.CLIENT_ID);
  await oauth.locator('input[data-name="clientSecret"]').fill(env.CLIENT_SECRET);
  // Ask for the one scope a Connection needs, as a Personalize admin would.
  await oauth.locator('label[for^="profiles:read-clientCredentials-checkbox"]').click();
  await oauth.locator("button.authorize").click();
  // Swagger UI fetched a token from /oauth/token when the button turns into "Logout".
  await oauth.locator("button", { hasText: "Logout" }).waitFor();
  await oauth.locator("button.btn-done").click();
  await modal.waitFor({ state: "detached" });

  log("run POST /v1/enrich for the demo guest");
  const operation = page.locator(".opblock-post", {
    has: page.locator('.opblock-summary-path[data-path="/v1/enrich"]'),
  });
  await operation.locator(".opblock-summary").click();
  await operation.locator("button.try-out__btn").click();
  const body = operation.locator("textarea.body-param__text");
  await body.waitFor();
  const sent = await body.inputValue();
  if (!sent.includes("demo@example.com")) {
    throw new Error(`the request body example is not the demo guest: ${sent}`);
  }
  await operation.locator("button.execute").click();
  const live = operation.locator(".live-responses-table .response").first();
  await live.locator(".response-col_status").waitFor();
  const code = (await live.locator(".response-col_status").innerText()).trim();
  const answer = await live.locator(".response-col_description pre").first().innerText();
  log(`answered ${code}: ${answer.replace(/\s+/g, " ").slice(0, 200)}`);
  if (!code.startsWith("200")) throw new Error(`expected 200, the page shows ${code}`);
  const document = JSON.parse(answer);
  if (document.found !== true) throw new Error(`expected found: true, got ${answer}`);

  // The picture for the README: the operation as it was run, request and answer.
  await page.addStyleTag({ content: ".swagger-ui .topbar { display: none }" });
  // From the operation's title to the end of the live answer (the documented responses that
  // follow are the reference, not the picture).
  const onPage = (element) => {
    const box = element.getBoundingClientRect();
    return { x: box.x + window.scrollX, y: box.y + window.scrollY, width: box.width, height: box.height };
  };
  const top = await operation.evaluate(onPage);
  const bottom = await operation.locator(".live-responses-table").evaluate(onPage);
  await page.screenshot({
    path: env.SCREENSHOT,
    fullPage: true,
    animations: "disabled",
    clip: { x: top.x, y: top.y, width: top.width, height: bottom.y + bottom.height - top.y + 8 },
  });
  log(`screenshot: ${env.SCREENSHOT}`);
  checkPolicy("/docs");

  // ReDoc renders the same document under the same policy.
  log(`open ${env.BASE_URL}/redoc`);
  await page.goto(`${env.BASE_URL}/redoc`, { waitUntil: "networkidle" });
  await page.locator(".api-content h1", { hasText: "enrich" }).first().waitFor();
  await page.locator("[data-section-id] h2", { hasText: "Issue an access token" }).first().waitFor();
  checkPolicy("/redoc");
  log("redoc rendered");
} catch (error) {
  status = 1;
  log(`FAILED: ${error.stack || error}`);
  if (failedRequests.length) log(`failed requests: ${failedRequests.join(", ")}`);
  await page.screenshot({ path: env.FAILURE_SCREENSHOT, fullPage: true }).catch(() => {});
  log(`failure screenshot: ${env.FAILURE_SCREENSHOT}`);
} finally {
  await context.close();
}
process.exit(status);
