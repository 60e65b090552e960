// node bullmq-sign-in.mjs REDIS_URL QUEUE MCP_URL KEY EMAIL...
// The seed's architecture on the pool: a BullMQ queue on the pool's redis-server and a BullMQ
// Worker (concurrency 2) whose job opens an MCP session with the API key, signs in on a data:
// page, checks the welcome, and closes. Prints each job's result as a JSON line; exits 1 when
// a job failed.
import { Queue, QueueEvents, Worker } from "bullmq";
import { openSession, ref, say } from "./session.mjs";

const [redisUrl, queueName, url, key, ...emails] = process.argv.slice(2);
const parsed = new URL(redisUrl);
const connection = { host: parsed.hostname, port: Number(parsed.port), db: Number(parsed.pathname.slice(1) || 0), maxRetriesPerRequest: null };
const SIGN_IN =
  "<title>Sign in</title><h1>Sign in</h1><form onsubmit=\"event.preventDefault(); " +
  "document.body.innerHTML = '<h1>Welcome, ' + this.email.value + '</h1>';\">" +
  "<label>Email <input name=email type=email></label><button type=submit>Continue</button></form>";

async function signIn(job) {
  const session = await openSession(url, key, "cinnamon-e2e-bullmq");
  try {
    await session.call("browser_navigate", { url: "data:text/html," + encodeURIComponent(SIGN_IN) });
    const page = await session.call("browser_snapshot");
    await session.call("browser_type", { element: "Email field", target: ref(page, "textbox", "Email"), text: job.data.email });
    await session.call("browser_click", { element: "Continue button", target: ref(page, "button", "Continue") });
    const after = await session.call("browser_snapshot");
    if (!after.includes(`Welcome, ${job.data.email}`)) throw new Error(`no welcome for ${job.data.email}:\n${after}`);
    return { email: job.data.email, container: session.container };
  } finally {
    await session.close();
  }
}

const queue = new Queue(queueName, { connection });
const events = new QueueEvents(queueName, { connection });
await events.waitUntilReady();
const worker = new Worker(queueName, signIn, { connection, concurrency: 2 });
const jobs = await Promise.all(emails.map((email) => queue.add("sign-in", { email }, { attempts: 1 })));
let failed = 0;
for (const job of jobs) {
  try {
    say({ event: "completed", ...(await job.waitUntilFinished(events, 180_000)) });
  } catch (error) {
    failed += 1;
    say({ event: "failed", email: job.data.email, error: String(error) });
  }
}
await worker.close();
await events.close();
await queue.obliterate({ force: true });
await queue.close();
process.exit(failed ? 1 : 0);
