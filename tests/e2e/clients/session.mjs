// An MCP session on connect, as a user of the official TypeScript SDK opens one: the pool's one
// URL, the API key in requestInit.headers. The gateway names the container it leased in the
// X-Cinnamon-Container header, read here through the transport's fetch option.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

export async function openSession(url, key, name) {
  const seen = { container: "" };
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${key}` } },
    fetch: async (input, init) => {
      const response = await fetch(input, init);
      seen.container ||= response.headers.get("x-cinnamon-container") ?? "";
      return response;
    },
  });
  const client = new Client({ name, version: "1.0.0" });
  await client.connect(transport);
  return {
    client,
    get container() {
      return seen.container;
    },
    get session() {
      return transport.sessionId;
    },
    async call(tool, args = {}) {
      const result = await client.callTool({ name: tool, arguments: args });
      const text = result.content.filter((part) => part.type === "text").map((part) => part.text).join("\n");
      if (result.isError) throw new Error(`${tool}: ${text}`);
      return text;
    },
    async close() {
      await transport.terminateSession(); // DELETE: the gateway releases the lease now
      await client.close();
    },
  };
}

// The ref (e.g. e5) of the element with that role and accessible name in a snapshot.
export function ref(snapshot, role, name) {
  const match = snapshot.match(new RegExp(`${role} "${name}"[^\\n]*\\[ref=(e\\d+)\\]`));
  if (!match) throw new Error(`no ${role} named ${name} on the page:\n${snapshot}`);
  return match[1];
}

export function say(line) {
  process.stdout.write(JSON.stringify(line) + "\n");
}
