// GraphiQL as a browser shows it: headless Chromium (Debian's, through
// playwright-core) opens `GET /graphql`, runs `{ __typename }` with the run
// button, waits for the answer, and saves a screenshot.
//   node graphiql.mjs http://127.0.0.1:8080/graphql /tmp/graphiql.png
import { chromium } from 'playwright-core';

const [url, shot] = process.argv.slice(2);
if (!url || !shot) {
  console.error('usage: node graphiql.mjs <graphql URL> <screenshot.png>');
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.RAPPORT_CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  const failed = [];
  page.on('requestfailed', (r) => failed.push(r.url()));
  page.on('pageerror', (e) => failed.push(`page error: ${e.message}`));
  await page.goto(`${url}?query=${encodeURIComponent('{ __typename }')}`);
  await page.waitForSelector('.graphiql-execute-button', { timeout: 30000 });
  await page.click('.graphiql-execute-button');
  await page.waitForFunction(
    () => document.querySelector('.graphiql-response')?.textContent.includes('QueryRoot'),
    null,
    { timeout: 30000 },
  );
  await page.screenshot({ path: shot });
  if (failed.length) throw new Error(`failed requests: ${failed.join(', ')}`);
  console.log('graphiql: ok');
} finally {
  await browser.close();
}
