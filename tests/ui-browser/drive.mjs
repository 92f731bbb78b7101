// Drives the web UI in the system's Chromium (playwright-core, which downloads no browser),
// as a user would: finds a sign-up's invocation by its key, opens its journal, cancels it
// behind the confirmation and watches its status change; then looks at the list on a phone.
// Usage: node drive.mjs <admin base URL> <workflow key> <screenshot folder>
// Exits non-zero, saying why, at the first thing that is not as expected.
import { chromium } from "playwright-core";

const [admin, key, out] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

function check(ok, message) {
  if (!ok) throw new Error(message);
}

// What the pages' content security policy refused: the UI's own script and style must
// never be among it (the live refresh would stop without a word).
const refused = [];
function watch(page) {
  page.on("console", (message) => {
    if (/Content Security Policy/i.test(message.text())) refused.push(message.text());
  });
  return page;
}

try {
  const page = watch(await browser.newPage({ viewport: { width: 1280, height: 800 } }));
  await page.goto(`${admin}/ui`);
  await page.fill('input[name="key"]', key);
  await page.click('form.filters button[type="submit"]');
  const rows = page.locator("#invocations tbody tr");
  await rows.first().waitFor();
  check((await rows.count()) === 1, `one invocation has the key ${key}`);
  check(
    (await rows.first().innerText()).includes("suspended"),
    "the sign-up waits for its click, suspended",
  );
  await page.screenshot({ path: `${out}/invocations.png`, fullPage: true });

  await rows.first().locator("a.id").click();
  const journal = page.locator("#journal");
  await journal.waitFor();
  const steps = await journal.innerText();
  for (const step of ["send verification e-mail", "get_promise", "email.clicked"]) {
    check(steps.includes(step), `the journal shows ${step}: ${steps}`);
  }
  await page.screenshot({ path: `${out}/journal.png`, fullPage: true });

  await page.click('.actions a[href$="/cancel"]');
  await page.locator('form[method="post"] button[type="submit"]').click();
  await page.waitForURL(/done=/);
  // Cancellation lands at the handler's next await; the page refreshes itself until then.
  await page.locator(".status-completed").waitFor({ timeout: 30_000 });
  const result = await page.locator("#main").innerText();
  check(/cancel/i.test(result), `the result says it was cancelled: ${result}`);
  await page.screenshot({ path: `${out}/cancelled.png`, fullPage: true });

  const phone = watch(await browser.newPage({ viewport: { width: 390, height: 844 } }));
  for (const path of ["/ui", "/ui/services", new URL(page.url()).pathname]) {
    await phone.goto(`${admin}${path}`);
    const width = await phone.evaluate(() => document.documentElement.scrollWidth);
    check(width <= 390, `${path} is ${width} pixels wide on a 390-pixel phone`);
  }
  await phone.goto(`${admin}/ui`);
  await phone.screenshot({ path: `${out}/phone.png`, fullPage: true });
  check(refused.length === 0, `the content security policy refused: ${refused.join(" | ")}`);
  console.log("ui: every check passed");
} catch (e) {
  console.error(`ui: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
