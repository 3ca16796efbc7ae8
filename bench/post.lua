-- One-item notifications for a known connection, each a distinct change (new etag), so
-- every request is a real insert, not a deduplicated copy. The script's argument (a
-- number: wrk ... -s post.lua URL -- TAG) goes into every etag, so that runs against
-- one database (a warm-up and the run after it, or two wrk at once) never repeat an
-- etag; without it every run sends the same etags.
local counter = 0
local thread_id = 0
local tag = 0
local template = [[{"value":[{"subscriptionId":"8f2c6a1e-3b7d-4c59-9e41-2d6f0b7a9c13",
"subscriptionExpirationDateTime":"2026-11-23T09:12:45.9696658+00:00","changeType":"updated",
"resource":"Users/0d7e4b9c-2f61-4a83-b5d0-9c1e7f3a6b28/Events/AAMkAGI2TG93AAA-event-%d=",
"resourceData":{"@odata.type":"#Microsoft.Graph.Event",
"@odata.id":"Users/0d7e4b9c-2f61-4a83-b5d0-9c1e7f3a6b28/Events/AAMkAGI2TG93AAA-event-%d=",
"@odata.etag":"W/\"DwAAABYAAAAXxlVK8zI/%d-%d-%d\"","id":"AAMkAGI2TG93AAA-event-%d="},
"clientState":"kQ7v2XbR9sLm4TzWc8YpN3dF6hJ1gA5e",
"tenantId":"5e0b2c7d-91a4-4f36-8d2e-a7c9b14f3e60"}]}]]

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function init(args)
  thread_id = tonumber(wrk.thread:get("thread_id")) or 0
  tag = tonumber(args[1]) or 0
end

function request()
  counter = counter + 1
  local n = counter % 50
  local body = string.format(template, n, n, tag, thread_id, counter, n)
  return wrk.format("POST", "/graph/notifications",
    {["Content-Type"] = "application/json"}, body)
end
