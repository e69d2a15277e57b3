import { readFileSync } from "node:fs";
import { join } from "node:path";
import { channelFields, type OpenApiDocument } from "./channelFields";

// The document the server describes itself with (`make ui-types` keeps it current).
const doc = JSON.parse(readFileSync(join(__dirname, "../../../openapi.json"), "utf8")) as OpenApiDocument;

describe("channel forms come from the OpenAPI document", () => {
  it("lists an email channel's fields in order, with labels, secrets and choices", () => {
    const fields = channelFields(doc, "email");
    expect(fields.map((f) => f.field)).toEqual([
      "smtp_host",
      "smtp_security",
      "smtp_port",
      "smtp_username",
      "smtp_password",
      "from",
      "to",
    ]);
    const byName = Object.fromEntries(fields.map((f) => [f.field, f]));
    expect(byName.smtp_host).toMatchObject({ label: "SMTP server", optional: false, placeholder: "smtp.example.com" });
    expect(byName.smtp_security?.options).toEqual(["starttls", "tls", "none"]);
    expect(byName.smtp_port).toMatchObject({ number: true, optional: true, placeholder: "587" });
    expect(byName.smtp_password).toMatchObject({ secret: true, optional: true, label: "Password" });
    expect(byName.to).toMatchObject({ list: true, label: "To (comma-separated)", optional: false });
  });

  it("marks secrets and optional fields of every kind", () => {
    expect(channelFields(doc, "discord")).toMatchObject([{ field: "url", label: "Webhook URL", secret: true }]);
    expect(channelFields(doc, "ntfy")).toMatchObject([
      { field: "url", label: "Server and topic", secret: false, optional: false },
      { field: "token", label: "Access token", secret: true, optional: true },
    ]);
    expect(channelFields(doc, "telegram").map((f) => [f.field, f.secret])).toEqual([
      ["bot_token", true],
      ["chat_id", false],
    ]);
    expect(channelFields(doc, "webhook")[1]).toMatchObject({
      field: "secret",
      label: "Signing secret (16+ characters)",
    });
  });
});
