using System.Collections.Concurrent;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Conduit.Storage.Log;

/// <summary>
/// The embedded log engine: one folder per topic under <c>Directory</c> ("_default" for the
/// empty topic), each with its segments and, when created with settings, a topic.json.
/// </summary>
public sealed class FileLogStorage : ILogStorage
{
    public const string DefaultTopicFolder = "_default";
    public const string TopicFile = "topic.json";

    private static readonly JsonSerializerOptions s_json = new()
    {
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
    };

    private readonly string _root;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<string, FileTopicLog> _topics = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, string> _offline = new(StringComparer.Ordinal);
    private readonly LogFileSystem _files;
    private readonly object _createLock = new();
    private readonly Timer? _retentionTimer;
    private bool _disposed;

    /// <param name="directory">The folder of every topic (created when missing).</param>
    /// <param name="defaults">Settings of topics created without their own.</param>
    /// <param name="retentionCheckInterval">How often retention runs besides at each segment roll; zero: only then.</param>
    /// <param name="maxTopics">How many topics may exist (each holds open files); creating more fails with <see cref="TopicLimitException"/>.</param>
    public FileLogStorage(string directory, TopicSettings? defaults = null, TimeSpan retentionCheckInterval = default, ILogger? logger = null, TimeProvider? time = null, int maxTopics = 1000)
        : this(LogFileSystem.Real, directory, defaults, retentionCheckInterval, logger, time, maxTopics)
    {
    }

    /// <summary>With the file operations going through <paramref name="files"/> (tests inject faults there).</summary>
    internal FileLogStorage(LogFileSystem files, string directory, TopicSettings? defaults = null, TimeSpan retentionCheckInterval = default, ILogger? logger = null, TimeProvider? time = null, int maxTopics = 1000)
    {
        _files = files;
        MaxTopics = maxTopics;
        _root = Path.GetFullPath(directory);
        Defaults = defaults ?? new TopicSettings();
        if (Defaults.Validate() is { } problem) throw new ArgumentException($"Default log settings: {problem}.");
        _logger = logger ?? NullLogger.Instance;
        _time = time ?? TimeProvider.System;
        Directory.CreateDirectory(_root);
        SettleReplacements();
        try
        {
            foreach (var folder in Directory.EnumerateDirectories(_root))
            {
                var folderName = Path.GetFileName(folder);
                var name = folderName == DefaultTopicFolder ? "" : folderName;
                if (name.Length > 0 && TopicNames.Validate(name) is not null)
                {
                    _logger.LogWarning("Log: ignoring folder {Folder}: not a topic name.", folder);
                    continue;
                }
                try
                {
                    _topics[name] = OpenTopic(name, folder, ReadConfig(folder));
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                    // One damaged topic folder keeps that topic offline, not the whole log.
                    _offline[name] = ex.Message;
                    _logger.LogCritical(ex, "Log topic '{Topic}' is OFFLINE: its folder {Folder} could not be opened. Its reads and writes answer UNAVAILABLE until the cause is fixed and the server restarts; the other topics are served.", name, folder);
                }
            }
            if (!_offline.ContainsKey("")) GetOrCreate("");
        }
        catch
        {
            foreach (var topic in _topics.Values) topic.Dispose();
            throw;
        }
        if (retentionCheckInterval > TimeSpan.Zero)
        {
            _retentionTimer = new Timer(_ => EnforceRetention(), null, retentionCheckInterval, retentionCheckInterval);
        }
    }

    public string Root => _root;

    public TopicSettings Defaults { get; }

    public int MaxTopics { get; }

    public IReadOnlyList<ITopicLog> Topics => [.. _topics.Values.OrderBy(t => t.Name, StringComparer.Ordinal)];

    /// <summary>Topics that could not be opened at start, with why (they are in no other list).</summary>
    public IReadOnlyDictionary<string, string> OfflineTopics => _offline;

    public ITopicLog? Find(string name)
    {
        if (_topics.TryGetValue(name, out var topic)) return topic;
        return _offline.TryGetValue(name, out var reason) ? throw new TopicOfflineException(name, reason) : null;
    }

    public ITopicLog GetOrCreate(string name)
    {
        if (_topics.TryGetValue(name, out var existing)) return existing;
        if (_offline.TryGetValue(name, out var reason)) throw new TopicOfflineException(name, reason);
        return CreateCore(name, null, failIfExists: false);
    }

    public ITopicLog Create(string name, TopicConfig config) => CreateCore(name, config, failIfExists: true);

    private FileTopicLog CreateCore(string name, TopicConfig? config, bool failIfExists)
    {
        if (TopicNames.Validate(name) is { } problem) throw new ArgumentException($"Topic name '{name}': {problem}.", nameof(name));
        if (config is not null && config.Apply(Defaults).Validate() is { } invalid) throw new ArgumentException($"Topic '{name}': {invalid}.", nameof(config));
        lock (_createLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_topics.TryGetValue(name, out var existing))
            {
                if (failIfExists) throw new TopicExistsException(name);
                return existing;
            }
            if (_offline.TryGetValue(name, out var reason)) throw new TopicOfflineException(name, reason);
            if (_topics.Count >= MaxTopics) throw new TopicLimitException(name, MaxTopics);
            var folder = Path.Combine(_root, name.Length == 0 ? DefaultTopicFolder : name);
            Directory.CreateDirectory(folder);
            if (config is not null) _files.WriteAtomically(Path.Combine(folder, TopicFile), JsonSerializer.SerializeToUtf8Bytes(config, s_json));
            var topic = OpenTopic(name, folder, config);
            _files.SyncDirectory(_root);
            _topics[name] = topic;
            return topic;
        }
    }

    /// <summary>
    /// Replaces a topic's files by the folder <paramref name="source"/> (on the same file system:
    /// moved, not copied) and opens it (recovery runs on the new files): a cluster node installing
    /// a snapshot (docs/cluster.md). The topic open now is closed first, but stays the one
    /// <see cref="Find"/> returns until the new one is open (the topic never looks missing); its
    /// reads and waits then throw <see cref="TopicReplacedException"/>. The old folder is renamed
    /// aside (<c>.replaced-&lt;folder&gt;</c>, a name no topic can have), the new one moved in, and
    /// the old one deleted; a crash between any two steps leaves a state the next start settles
    /// (<see cref="SettleReplacements"/>): the old topic when the new folder was not moved in yet,
    /// the new one otherwise, never a mix and never neither.
    /// </summary>
    public ITopicLog ReplaceTopic(string name, string source)
    {
        if (TopicNames.Validate(name) is { } problem) throw new ArgumentException($"Topic name '{name}': {problem}.", nameof(name));
        lock (_createLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _topics.TryGetValue(name, out var old);
            if (old is null && _topics.Count >= MaxTopics) throw new TopicLimitException(name, MaxTopics);
            var folderName = name.Length == 0 ? DefaultTopicFolder : name;
            var folder = Path.Combine(_root, folderName);
            var aside = Path.Combine(_root, ReplacedPrefix + folderName);
            old?.CloseReplaced();
            FileTopicLog topic;
            try
            {
                SettleReplacement(folderName); // one an earlier call left half done (it failed between the renames)
                if (Directory.Exists(folder)) Directory.Move(folder, aside);
                Directory.Move(source, folder);
                _files.SyncDirectory(_root);
                topic = OpenTopic(name, folder, ReadConfig(folder));
            }
            catch
            {
                // Not replaced: the closed instance goes (the topic is missing until the next start
                // or replacement); the folder set aside comes back if the new one is not in place.
                if (old is not null) _topics.TryRemove(new KeyValuePair<string, FileTopicLog>(name, old));
                try
                {
                    SettleReplacement(folderName);
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                    _logger.LogError(ex, "Log topic '{Topic}': its replaced folder could not be settled; the next start does it.", name);
                }
                throw;
            }
            _topics[name] = topic;
            _offline.TryRemove(name, out _);
            if (Directory.Exists(aside)) Directory.Delete(aside, recursive: true);
            return topic;
        }
    }

    /// <summary>
    /// Takes topic <paramref name="name"/> out of this node's log without deleting its files: it
    /// is closed (its reads and waits throw <see cref="TopicReplacedException"/>), no longer listed,
    /// and its folder is moved to <c>.set-aside-&lt;folder&gt;-&lt;unix ms&gt;</c> (a name no topic can
    /// have; ignored at start) for an operator to look at or delete: a cluster node installing a
    /// snapshot that lacks the topic (docs/cluster.md). The new path, or null without such a topic.
    /// </summary>
    public string? SetAsideTopic(string name)
    {
        lock (_createLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_topics.TryGetValue(name, out var old)) return null;
            var folderName = name.Length == 0 ? DefaultTopicFolder : name;
            var aside = Path.Combine(_root, $".set-aside-{folderName}-{DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()}");
            old.CloseReplaced();
            _topics.TryRemove(new KeyValuePair<string, FileTopicLog>(name, old));
            Directory.Move(Path.Combine(_root, folderName), aside);
            _files.SyncDirectory(_root);
            return aside;
        }
    }

    private const string ReplacedPrefix = ".replaced-";

    /// <summary>At start, before any topic opens: settles every replacement a crash interrupted (<see cref="ReplaceTopic"/>).</summary>
    private void SettleReplacements()
    {
        foreach (var aside in Directory.EnumerateDirectories(_root, ReplacedPrefix + "*").ToList())
        {
            SettleReplacement(Path.GetFileName(aside)[ReplacedPrefix.Length..]);
        }
    }

    /// <summary>
    /// A topic folder set aside by a replacement: moved back when no folder took its place (the
    /// crash came before the new one was moved in), deleted otherwise (the new one is complete: it
    /// was moved in whole). Either way made durable before the topic opens.
    /// </summary>
    private void SettleReplacement(string folderName)
    {
        var aside = Path.Combine(_root, ReplacedPrefix + folderName);
        if (!Directory.Exists(aside)) return;
        var folder = Path.Combine(_root, folderName);
        if (Directory.Exists(folder))
        {
            _logger.LogWarning("Log: removing {Folder}, the files a snapshot install replaced (interrupted before it removed them).", aside);
            Directory.Delete(aside, recursive: true);
        }
        else
        {
            _logger.LogWarning("Log: moving {Folder} back to {Topic}: a snapshot install was interrupted before it moved the new files in; the node keeps its old files and the install is sent again.", aside, folder);
            Directory.Move(aside, folder);
        }
        _files.SyncDirectory(_root);
    }

    /// <summary>The folder of a topic (whether or not it exists yet).</summary>
    public string TopicDirectory(string name) => Path.Combine(_root, name.Length == 0 ? DefaultTopicFolder : name);

    /// <summary>Makes what every open topic has written durable now (all policies): a cluster node's snapshot. Throws <see cref="LogFailedException"/> for a topic whose write or fsync failed (what it wrote may not be on disk).</summary>
    public void Flush()
    {
        foreach (var topic in _topics.Values)
        {
            topic.Flush();
            if (topic.Failure is { } failure) throw new LogFailedException(topic.Name, failure);
        }
    }

    /// <summary>Writes a small file so that after a crash it holds either the old or the new content (temporary file, fsync, rename, directory fsync).</summary>
    public static void WriteFileAtomically(string path, ReadOnlySpan<byte> content) => LogFileSystem.Real.WriteAtomically(path, content);

    /// <summary>Makes the creation, removal or renaming of files in <paramref name="path"/> durable.</summary>
    public static void SyncDirectory(string path) => LogFileSystem.Real.SyncDirectory(path);

    private FileTopicLog OpenTopic(string name, string folder, TopicConfig? config) =>
        FileTopicLog.Open(name, folder, config?.Apply(Defaults) ?? Defaults, _logger, _time, _files);

    private TopicConfig? ReadConfig(string folder)
    {
        var path = Path.Combine(folder, TopicFile);
        if (!File.Exists(path)) return null;
        try
        {
            return JsonSerializer.Deserialize<TopicConfig>(File.ReadAllBytes(path), s_json);
        }
        catch (JsonException ex)
        {
            throw new IOException($"Cannot read topic settings {path}: {ex.Message}", ex);
        }
    }

    /// <summary>Applies every topic's retention now; returns the number of segments removed.</summary>
    public int EnforceRetention()
    {
        var removed = 0;
        foreach (var topic in _topics.Values)
        {
            try
            {
                removed += topic.EnforceRetention();
            }
            catch (IOException ex)
            {
                _logger.LogError(ex, "Log topic '{Topic}': retention failed.", topic.Name);
            }
        }
        return removed;
    }

    public void Dispose()
    {
        lock (_createLock)
        {
            if (_disposed) return;
            _disposed = true;
        }
        _retentionTimer?.Dispose();
        foreach (var topic in _topics.Values) topic.Dispose();
    }
}
