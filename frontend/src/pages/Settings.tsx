// Settings: each section is its feature's (features/settings); the page
// only composes them, for admins.
import { ErrorState, Skeleton } from "../components/ui";
import { useSession } from "../lib/session";
import { useLlmSettings } from "../features/settings/api";
import { Backups } from "../features/settings/Backups";
import { DiscordWebhookForm } from "../features/settings/DiscordWebhook";
import { HomeAssistantForm } from "../features/settings/HomeAssistant";
import { LlmSettingsForm } from "../features/settings/LlmSettings";
import { NotificationChannels } from "../features/settings/NotificationChannels";

export function Settings() {
  const { canEdit } = useSession();
  const llm = useLlmSettings();
  if (!canEdit) {
    return (
      <div className="stack">
        <h1>Settings</h1>
        <p className="notice">Only admins change the LLM and notification settings.</p>
      </div>
    );
  }
  return (
    <div className="stack">
      <h1>Settings</h1>
      {llm.isPending && <Skeleton lines={3} label="Loading LLM settings" />}
      {llm.isError && <ErrorState error={llm.error} retry={() => llm.refetch()} />}
      {llm.data && <LlmSettingsForm key={llm.data.updated_at ?? "default"} current={llm.data} />}
      <DiscordWebhookForm />
      <NotificationChannels />
      <HomeAssistantForm />
      <Backups />
    </div>
  );
}
