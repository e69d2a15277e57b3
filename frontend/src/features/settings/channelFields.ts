// A notification channel kind's form, read from the server's OpenAPI
// document (the kind's schema: its properties in order, which are required,
// descriptions, examples, secrets and choices), so the UI never keeps its
// own copy of what each kind asks for.
import type { components } from "../../lib/api-schema";
import type { ChannelKind } from "../../lib/types";

interface PropertySchema {
  type?: string | string[];
  description?: string;
  example?: unknown;
  writeOnly?: boolean;
  $ref?: string;
}

interface ObjectSchema {
  properties?: Record<string, PropertySchema>;
  required?: string[];
  enum?: string[];
}

export interface OpenApiDocument {
  components: { schemas: Record<string, ObjectSchema> };
}

/** Where each kind's fields are described; the compiler checks the names. */
const SCHEMA_OF: Record<ChannelKind, keyof components["schemas"]> = {
  discord: "DiscordChannel",
  ntfy: "NtfyChannel",
  telegram: "TelegramChannel",
  webhook: "WebhookChannel",
  email: "EmailChannel",
};

export interface FieldSpec {
  field: string;
  label: string;
  placeholder?: string;
  secret: boolean;
  optional: boolean;
  /** A choice instead of free text; the first is the default. */
  options?: string[];
  /** A list, typed comma-separated. */
  list: boolean;
  number: boolean;
}

function typeOf(property: PropertySchema): string | undefined {
  return Array.isArray(property.type) ? property.type.find((t) => t !== "null") : property.type;
}

/** The form fields of a channel of `kind`, in the schema's order. */
export function channelFields(doc: OpenApiDocument, kind: ChannelKind): FieldSpec[] {
  const schema = doc.components.schemas[SCHEMA_OF[kind]];
  const required = new Set(schema?.required ?? []);
  return Object.entries(schema?.properties ?? {}).map(([field, property]) => {
    // The description's first sentence is the label.
    const label = (property.description ?? field).split(/\.(\s|$)/)[0] ?? field;
    const choices = property.$ref ? doc.components.schemas[property.$ref.split("/").pop() ?? ""]?.enum : undefined;
    const example = property.example;
    return {
      field,
      label,
      placeholder: Array.isArray(example) ? example.join(", ") : example === undefined ? undefined : String(example),
      secret: property.writeOnly === true,
      optional: !required.has(field),
      options: choices,
      list: typeOf(property) === "array",
      number: typeOf(property) === "integer",
    };
  });
}
