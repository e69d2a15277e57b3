// Who is signed in, and what the UI may offer them.
import { createContext, useContext } from "react";
import type { AuthStatus, User } from "./types";

export interface Session {
  user: User;
  /** Admins change things; viewers only look. */
  canEdit: boolean;
  status: AuthStatus;
}

export const SessionContext = createContext<Session | null>(null);

export function useSession(): Session {
  const session = useContext(SessionContext);
  if (!session) throw new Error("useSession outside a signed-in page");
  return session;
}

/** Where to return after signing in: a path on this site, never elsewhere. */
export function safeNext(raw: string | null): string {
  if (!raw || !raw.startsWith("/") || raw.startsWith("//") || raw.startsWith("/\\")) return "/";
  return raw;
}
