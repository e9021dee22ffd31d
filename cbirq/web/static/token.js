// Opening a page with ?token=T has set the token's cookie: take the token out of the address
// bar and this history entry, so it is neither shown, bookmarked nor shared with the address.
"use strict";

{
  const url = new URL(location.href);
  if (url.searchParams.has("token")) {
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url);
  }
}
