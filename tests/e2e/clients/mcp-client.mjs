// node mcp-client.mjs URL KEY [hold]
// Lists the tools, navigates, snapshots and closes; with "hold", waits for a line on stdin
// between the snapshot and the close (the tests hold two sessions open at once that way).
// Prints one JSON line when the page is seen ({"event": "ready", ...}) and one when closed.
import { createInterface } from "node:readline";
import { openSession, say } from "./session.mjs";

const [url, key, hold] = process.argv.slice(2);
const started = Date.now();
const session = await openSession(url, key, "cinnamon-e2e-typescript-sdk");
const { tools } = await session.client.listTools();
await session.call("browser_navigate", { url: "data:text/html,<title>TS SDK</title><h1>Hello from the TypeScript SDK</h1>" });
const snapshot = await session.call("browser_snapshot");
say({ event: "ready", container: session.container, session: session.session, tools: tools.map((t) => t.name), snapshot, waited_ms: Date.now() - started });
if (hold === "hold") {
  const lines = createInterface({ input: process.stdin });
  await new Promise((resolve) => lines.once("line", resolve));
  lines.close();
}
await session.close();
say({ event: "closed", container: session.container });
