// Drives the Enclave console in headless Chromium (Debian's `chromium`, through `playwright-core`
// from the npm registry) as a person would: signs in at the OpenID provider's own pages, chats at
// each working label, and reports what the page showed.
//
//   node drive.mjs SPEC.json
//
// SPEC: { "playwright": ".../index.mjs", "chromium": "/usr/bin/chromium", "base": "http://...",
//   "person": "alice", "out": "dir for screenshots", "steps": [{ "label": "SECRET",
//   "text": "(S) ..." }] }
// Prints one JSON object: per step the banners' text and pixel colours, and the page's console
// errors, CSP violations, forged-request outcome, keyboard reach and weight.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const spec = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const { chromium } = await import(spec.playwright);

const browser = await chromium.launch({
  executablePath: spec.chromium,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const viewport = { width: 1000, height: 700 };
// Generous waits: the suite may share two cores with a build.
const patience = 120000;
const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
context.setDefaultTimeout(patience);
const page = await context.newPage();
const errors = [];
// Errors on Enclave's pages (the provider's own pages load fonts from the internet and fail here).
const ours = (url) => url.startsWith(spec.base);
page.on('console', (m) => { if (m.type() === 'error' && ours(m.location().url || page.url())) errors.push(`${m.location().url}: ${m.text()}`); });
page.on('pageerror', (e) => { if (ours(page.url())) errors.push(e.message); });
await page.addInitScript(() => {
  window.__csp = [];
  document.addEventListener('securitypolicyviolation', (e) => {
    window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`);
  });
});
// Pixel colours of a PNG at points, read by drawing it on a canvas in a blank page.
async function pixels(png, points) {
  const p = await context.newPage();
  const found = await p.evaluate(async ({ b64, points }) => {
    const img = new Image();
    img.src = `data:image/png;base64,${b64}`;
    await img.decode();
    const c = document.createElement('canvas');
    c.width = img.width;
    c.height = img.height;
    const g = c.getContext('2d');
    g.drawImage(img, 0, 0);
    return points.map(([x, y]) => {
      const [r, gr, b] = g.getImageData(x, y, 1, 1).data;
      return `#${[r, gr, b].map((v) => v.toString(16).padStart(2, '0')).join('')}`;
    });
  }, { b64: png.toString('base64'), points });
  await p.close();
  return found;
}

async function banners(name, p = page, height = viewport.height) {
  const png = await p.screenshot({ path: join(spec.out, `${name}.png`) });
  const [top, bottom] = await pixels(png, [[3, 3], [3, height - 3]]);
  const read = (id) => p.$eval(id, (b) => ({ text: b.textContent.trim(), color: getComputedStyle(b).color }));
  return { top, bottom, topText: (await read('#banner-top')).text, bottomText: (await read('#banner-bottom')).text, textColour: (await read('#banner-top')).color };
}

// Signs `person` in: the console sends the browser to /login, then to the provider's pages.
async function signIn(p, person, path) {
  await p.goto(`${spec.base}${path}`);
  await p.fill('input[name=login]', person);
  await p.fill('input[name=password]', 'any');
  await p.click('button[type=submit]');
  await p.waitForSelector('button[type=submit]');
  if (!p.url().startsWith(spec.base)) await p.click('button[type=submit]'); // consent
  await p.waitForURL(`${spec.base}${path}`);
}

const out = { steps: [] };
// The page being driven, for the report when something fails.
let active = page;
try {
  await signIn(page, spec.person, '/console');
  await page.waitForSelector('#chat');
  out.signedIn = await page.textContent('.who');
  out.first = await banners('console-first');

  await page.fill('#max-tokens', '8');
  let answered = 0;
  for (const step of spec.steps) {
    await page.selectOption('#label', step.label);
    await page.fill('#prompt', step.text);
    await page.click('#send');
    answered += 1;
    await page.waitForSelector(`li.message.assistant:nth-of-type(${answered * 2})[data-done="true"], li.message.error`, { timeout: patience });
    const shown = await banners(`console-${out.steps.length}`);
    const marks = await page.$$eval('li.message .portion', (m) => m.map((x) => x.textContent.trim()));
    const answer = await page.$$eval('li.message.assistant .text', (m) => m.map((x) => x.textContent));
    out.steps.push({ ...shown, marks, answer: answer[answer.length - 1], errors: await page.$$eval('li.message.error', (m) => m.map((x) => x.textContent)) });
  }

  // The conversation is kept: a reload shows it whole, under its banner, listed; its Markdown
  // export carries the banner and portion marks.
  out.conversationUrl = page.url();
  await page.reload();
  await page.waitForSelector('#chat');
  out.reloaded = {
    messages: await page.$$eval('li.message[data-role]', (m) => m.length),
    marks: await page.$$eval('li.message .portion', (m) => m.map((x) => x.textContent.trim())),
    banner: await page.textContent('#banner-top'),
    listed: await page.$$eval('#conversation-list li', (l) => l.length),
  };
  out.exported = await page.evaluate(async () => (await fetch(document.getElementById('export').href)).text());

  // A new conversation grounded on a knowledge base: asked at the lowest working label, only
  // the UNCLASSIFIED passage is read; asked again at SECRET, the SECRET passage is cited and
  // the banner rises with it.
  if (spec.kbQuestion) {
    await page.goto(`${spec.base}/console`);
    await page.waitForSelector('#chat');
    await page.fill('#max-tokens', '8');
    await page.check('input[name="kb"]');
    out.cited = [];
    for (const [n, working] of ['UNCLASSIFIED', 'SECRET'].entries()) {
      await page.selectOption('#label', working);
      await page.fill('#prompt', spec.kbQuestion);
      await page.click('#send');
      await page.waitForSelector(`li.message.assistant:nth-of-type(${2 * (n + 1)})[data-done="true"], li.message.error`, { timeout: patience });
      out.cited.push({
        ...(await banners(`console-cited-${n}`)),
        citations: await page.$$eval(`li.message.assistant:nth-of-type(${2 * (n + 1)}) .citations li`, (l) => l.map((x) => x.textContent.replace(/\s+/g, ' ').trim())),
        errors: await page.$$eval('li.message.error', (m) => m.map((x) => x.textContent)),
      });
    }
  }

  // Time to first token: shown in the console (from the click on Send to the first token on
  // screen, the performance marks the page sets) against the API's own (a streamed request from
  // the same page, to its first content chunk), alternating, same prompt, fresh conversations.
  const firstToken = { console: [], api: [] };
  for (let i = 0; i < 6; i += 1) {
    // A sampled answer can end before any text (the model's first token is its end): such a
    // try has no first token to time, and is made again.
    const viaApi = async () => page.evaluate(async ({ csrf }) => {
      for (let attempt = 0; attempt < 4; attempt += 1) {
        const started = performance.now();
        const r = await fetch('/v1/chat/completions', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', 'Enclave-Label': 'UNCLASSIFIED', 'Enclave-CSRF': csrf },
          body: JSON.stringify({ model: document.getElementById('model').value, max_tokens: 8, stream: true, messages: [{ role: 'user', content: 'Say one word.' }] }),
        });
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let seen = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          seen += value;
          if (/"content":"[^"]/.test(seen)) { const t = performance.now() - started; await reader.cancel(); return t; }
        }
      }
      return null;
    }, { csrf: await page.$eval('meta[name="enclave-csrf"]', (m) => m.content) });
    const viaConsole = async () => {
      await page.fill('#max-tokens', '8');
      await page.selectOption('#label', 'UNCLASSIFIED');
      // Typed at a brisk typist's pace: the page makes the conversation while it is written.
      await page.fill('#prompt', '');
      await page.type('#prompt', 'Say one word.', { delay: 25 });
      await page.click('#send');
      await page.waitForSelector('li.message.assistant[data-done="true"]', { timeout: patience });
      return page.evaluate(() => (performance.getEntriesByName('enclave:first-token').length === 0 ? null : {
        shown: performance.measure('ftt', 'enclave:ask', 'enclave:first-token').duration,
        // What the page does before it asks (the label service, a new conversation).
        before: performance.measure('pre', 'enclave:ask', 'enclave:request').duration,
      }));
    };
    // As for the API: an answer that ended before any text is asked again, on a fresh page.
    const viaConsoleTimed = async () => {
      for (let attempt = 0; attempt < 4; attempt += 1) {
        if (attempt > 0) {
          await page.goto(`${spec.base}/console`);
          await page.waitForSelector('#chat');
        }
        const t = await viaConsole();
        if (t !== null) return t;
      }
      return null;
    };
    await page.goto(`${spec.base}/console`);
    await page.waitForSelector('#chat');
    if (i % 2 === 0) {
      firstToken.api.push(await viaApi());
      firstToken.console.push(await viaConsoleTimed());
    } else {
      firstToken.console.push(await viaConsoleTimed());
      firstToken.api.push(await viaApi());
    }
  }
  out.firstToken = firstToken;

  // Keyboard only: Tab from the top reaches every control.
  await page.goto(`${spec.base}/console`);
  await page.waitForSelector('#chat');
  const reached = new Set();
  for (let i = 0; i < 20; i += 1) {
    await page.keyboard.press('Tab');
    reached.add(await page.evaluate(() => document.activeElement.id || document.activeElement.textContent.trim() || document.activeElement.tagName));
  }
  out.keyboard = [...reached];
  out.csp = await page.evaluate(() => window.__csp);
  // The chat page's weight: its HTML and every stylesheet and script it names, as served.
  await page.goto(`${spec.base}/console`);
  await page.waitForSelector('#chat');
  const weighed = await page.evaluate(async () => {
    const urls = [location.pathname,
      ...[...document.querySelectorAll('link[rel=stylesheet], link[rel=icon], script[src]')].map((e) => new URL(e.href || e.src).pathname)];
    const sizes = {};
    for (const u of urls) sizes[u] = (await (await fetch(u)).arrayBuffer()).byteLength;
    return sizes;
  });
  out.weight = Object.values(weighed).reduce((a, b) => a + b, 0);
  out.weighed = Object.keys(weighed);

  // A forged cross-origin form post (from the provider's origin: same site, another origin)
  // carries the session cookie; the server must refuse it.
  const evil = await context.newPage();
  await evil.goto(`${spec.provider}/.well-known/openid-configuration`);
  await Promise.all([
    evil.waitForNavigation(),
    evil.evaluate((target) => {
      const f = document.createElement('form');
      f.method = 'post';
      f.action = target;
      f.enctype = 'text/plain';
      const i = document.createElement('input');
      i.name = '{"model":"x","messages":[{"role":"user","content":"hi"}],"x":"';
      i.value = '"}';
      f.append(i);
      document.body.append(f);
      f.submit();
    }, `${spec.base}/v1/chat/completions`),
  ]);
  out.forged = await evil.textContent('body');

  // An auditor verifies a record's inclusion in the latest checkpoint, in the page; then the
  // same with the proof tampered on its way.
  if (spec.auditor) {
    const auditContext = await browser.newContext({ viewport });
    auditContext.setDefaultTimeout(patience);
    const audit = await auditContext.newPage();
    active = audit;
    audit.on('console', (m) => { if (m.type() === 'error' && ours(m.location().url || audit.url())) errors.push(`${m.location().url}: ${m.text()}`); });
    await signIn(audit, spec.auditor, '/console/audit');
    await audit.waitForSelector('#records tr');
    out.audit = { rows: await audit.$$eval('#records tr', (r) => r.length), checkpoint: await audit.textContent('#checkpoint'), banner: await audit.textContent('#banner-top') };
    const first = '#records tr:first-child';
    await audit.click(`${first} button.verify`);
    await audit.waitForSelector(`${first} td.verdict`);
    out.audit.verified = await audit.textContent(`${first} td.verdict`);
    await audit.reload();
    await audit.waitForSelector('#records tr');
    await audit.route('**/v1/audit/proof/inclusion*', async (route) => {
      const response = await route.fetch();
      const proof = await response.json();
      if (proof.proof.length === 0) proof.proof.push(btoa('x'.repeat(32)));
      const bytes = Uint8Array.from(atob(proof.proof[0]), (c) => c.charCodeAt(0));
      bytes[0] ^= 1;
      proof.proof[0] = btoa(String.fromCharCode(...bytes));
      await route.fulfill({ response, json: proof });
    });
    await audit.click(`${first} button.verify`);
    await audit.waitForSelector(`${first} td.verdict`);
    out.audit.tampered = await audit.textContent(`${first} td.verdict`);
    // Filters: one person's allowed calls at one label.
    await audit.fill('#audit-user', 'alice');
    await audit.selectOption('#audit-outcome', 'allowed');
    await audit.fill('#audit-label', 'TOP SECRET');
    await audit.click('#audit-filter button[type=submit]');
    await audit.waitForSelector('#audit-status:has-text("record(s)")');
    out.audit.filtered = await audit.$$eval('#records tr', (rows) => rows.map((r) => [...r.children].map((c) => c.textContent)));
    await audit.screenshot({ path: join(spec.out, 'console-audit.png') });
  }
  // An administrator: the administration page's tables, a key minted and shown once, working,
  // then revoked; a knowledge base created, files uploaded (one refused, with its reason),
  // searched at SECRET with the banner rising to the passage read.
  if (spec.admin) {
    const ac = await browser.newContext({ viewport: { width: 1200, height: 900 } });
    ac.setDefaultTimeout(patience);
    const admin = await ac.newPage();
    active = admin;
    // Answers the page shows the person (a refused file, the revoked key's 401) are logged by
    // Chromium as failed loads: kept apart, and checked to be exactly those.
    const refusals = [];
    admin.on('console', (m) => {
      if (m.type() !== 'error' || !ours(m.location().url || admin.url())) return;
      if (m.text().startsWith('Failed to load resource: the server responded with a status of 4')) refusals.push(`${new URL(m.location().url).pathname} ${m.text().match(/status of (\d+)/)[1]}`);
      else errors.push(`${m.location().url}: ${m.text()}`);
    });
    admin.on('pageerror', (e) => errors.push(e.message));
    await signIn(admin, spec.admin, '/console/admin');
    await admin.waitForSelector('#keys tr');
    await admin.waitForSelector('#models tr');
    const a = {};
    a.tenants = await admin.$$eval('#tenants tr', (r) => r.map((x) => x.textContent));
    a.deployments = await admin.$$eval('#deployments tr', (r) => r.map((x) => x.textContent));
    a.models = await admin.$$eval('#models tr', (r) => r.map((x) => x.textContent));
    a.usageDays = Number(await admin.$eval('#usage-chart', (s) => s.dataset.days || '0'));
    a.usageRows = await admin.$$eval('#usage tr', (r) => r.map((x) => x.textContent));
    await admin.fill('#key-name', 'report bot');
    await admin.selectOption('#key-clearance', 'CONFIDENTIAL');
    await admin.click('#new-key button[type=submit]');
    await admin.waitForSelector('#new-secret:not([hidden])');
    a.secret = await admin.textContent('#secret-value');
    const bearer = (secret) => admin.evaluate(async (s) => (await fetch('/v1/models', { headers: { Authorization: 'Bearer ' + s } })).status, secret);
    a.secretWorks = await bearer(a.secret);
    await admin.screenshot({ path: join(spec.out, 'console-admin.png') });
    await admin.reload();
    await admin.waitForSelector('#keys tr');
    a.secretAfterReload = (await admin.content()).includes(a.secret);
    const row = admin.locator('#keys tr', { hasText: 'report bot' });
    await row.locator('button.revoke').click();
    await admin.waitForSelector('#admin-status:has-text("revoked")');
    await admin.waitForTimeout(1200);
    a.secretAfterRevoke = await bearer(a.secret);

    await admin.goto(`${spec.base}/console/knowledge-bases`);
    await admin.waitForSelector('#kbs tr');
    await admin.fill('#kb-name', 'manuals');
    await admin.selectOption('#kb-max', 'SECRET');
    await admin.click('#new-kb button[type=submit]');
    await admin.waitForSelector('#kb-open:not([hidden])');
    await admin.setInputFiles('#upload-files', spec.uploads);
    await admin.selectOption('#upload-label', 'UNCLASSIFIED');
    await admin.click('#upload button[type=submit]');
    await admin.waitForSelector('#kb-status:has-text("Uploaded")');
    a.uploadStatus = await admin.textContent('#kb-status');
    a.uploads = await admin.$$eval('#upload-results li', (l) => l.map((x) => ({ ok: x.className === 'ok', text: x.textContent })));
    // Polled from here: a predicate evaluated in the page would need `unsafe-eval`, which the
    // page's CSP rightly refuses.
    for (let i = 0; i < 120; i += 1) {
      const states = await admin.$$eval('#documents tr', (r) => r.map((x) => x.dataset.status));
      if (states.length > 0 && states.every((st) => st === 'ready' || st === 'failed')) break;
      await admin.waitForTimeout(500);
    }
    a.documents = await admin.$$eval('#documents tr', (r) => r.map((x) => x.textContent));
    await admin.fill('#search-query', spec.searchQuery);
    await admin.selectOption('#search-label', 'SECRET');
    await admin.click('#kb-search button[type=submit]');
    await admin.waitForSelector('#passages li');
    a.passages = await admin.$$eval('#passages li', (l) => l.map((x) => x.textContent));
    a.banner = await banners('console-kb', admin, 900);
    a.csp = await admin.evaluate(() => window.__csp || []);
    a.refusals = refusals;
    out.admin = a;
    await ac.close();
  }

  // A reader cleared UNCLASSIFIED: every page they can reach, and the same conversation's
  // address, carry none of the SECRET words, whatever the DOM holds.
  if (spec.reader) {
    const rc = await browser.newContext({ viewport });
    rc.setDefaultTimeout(patience);
    const reader = await rc.newPage();
    active = reader;
    reader.on('console', (m) => { if (m.type() === 'error' && ours(m.location().url || reader.url())) errors.push(`${m.location().url}: ${m.text()}`); });
    await signIn(reader, spec.reader, '/console');
    await reader.waitForSelector('#chat');
    const pages = [];
    pages.push(await reader.content());
    await reader.fill('#max-tokens', '8');
    await reader.check('input[name="kb"]');
    await reader.fill('#prompt', spec.kbQuestion);
    await reader.click('#send');
    await reader.waitForSelector('li.message.assistant[data-done="true"], li.message.error', { timeout: patience });
    const citations = await reader.$$eval('.citations li', (l) => l.map((x) => x.textContent.replace(/\s+/g, ' ').trim()));
    pages.push(await reader.content());
    await reader.reload();
    await reader.waitForSelector('#chat');
    pages.push(await reader.content());
    await reader.goto(`${spec.base}/console/knowledge-bases`);
    await reader.waitForSelector('#kbs tr');
    await reader.locator('#kbs tr', { hasText: 'ferries' }).locator('button.open-kb').click();
    await reader.fill('#search-query', spec.kbQuestion);
    await reader.click('#kb-search button[type=submit]');
    await reader.waitForSelector('#passages li');
    const searched = await reader.$$eval('#passages li', (l) => l.map((x) => x.textContent));
    pages.push(await reader.content());
    await reader.goto(`${spec.base}/console/admin`);
    await reader.waitForSelector('.notice');
    pages.push(await reader.content());
    await reader.goto(out.conversationUrl);
    await reader.waitForSelector('#chat');
    pages.push(await reader.content());
    const notice = await reader.textContent('.notice').catch(() => null);
    const id = new URL(out.conversationUrl).searchParams.get('c');
    // The API answers these with 404 on purpose; Chromium logs each as a console error.
    reader.removeAllListeners('console');
    for (const path of ['/v1/conversations', `/v1/conversations/${id}`, `/v1/conversations/${id}/export`, '/v1/usage']) {
      pages.push(await reader.evaluate(async (p) => (await fetch(p)).text(), path));
    }
    out.reader = { citations, searched, notice, banner: await reader.textContent('#banner-top'), pages };
    await rc.close();
  }
  out.errors = errors;
} catch (e) {
  out.failure = `${e.message}\n${active.url()}\n${await active.content().catch(() => '')}`;
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
